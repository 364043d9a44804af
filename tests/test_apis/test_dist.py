"""close_cpu_process_group: the gloo group our tools create is gone, threads joined, before
Python exits; after a successful run the ranks meet first (a peer lost there is said in one line);
after a failed run it closes without waiting for peers that may be dead.

Each case runs 2 real ranks (torchrun's environment variables, as tools/dist_*.sh set them).
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RANK = textwrap.dedent('''
    import json, os, sys, time
    import torch
    from mmengine.config import Config
    from mmnorm_plugin.apis.dist import (AnyDeviceDDP, close_cpu_process_group,
                                         init_cpu_process_group, lost_peer_message)

    def threads():
        return len(os.listdir('/proc/self/task'))

    torch.set_num_threads(1)
    before = threads()
    init_cpu_process_group(Config(dict(env_cfg=dict(dist_cfg=dict(timeout=60)))))
    # as in a run: the DDP wrapper holds the group from inside a reference cycle (the Runner)
    holder = dict(model=AnyDeviceDDP(torch.nn.Linear(2, 2)))
    holder['self'] = holder
    del holder
    # the run's last collective: the metrics broadcast, then straight to the exit
    torch.distributed.broadcast(torch.arange(4096.), src=0)
    during = threads()
    rank = int(os.environ['RANK'])
    marker = sys.argv[2]
    mode = sys.argv[1]
    if rank == 1:
        if mode in ('peer_died', 'peer_died_before_barrier'):
            os._exit(0)  # gone without closing
        time.sleep(1)  # the last rank to finish its run
        open(marker, 'w').close()
    error = None
    try:
        close_cpu_process_group(run_succeeded=mode in ('success', 'peer_died_before_barrier'))
    except RuntimeError as err:
        error = lost_peer_message(err, 60) or repr(err)
    print(json.dumps(dict(before=before, during=during, after=threads(),
                          initialized=torch.distributed.is_initialized(),
                          peer_reached_close=os.path.exists(marker), error=error)))
''')


@pytest.fixture(scope='module')
def run_ranks(tmp_path_factory):
    """``run_ranks(mode)``: what each rank printed (``None`` for one that died); each mode
    launches once for the module."""
    outcomes = {}

    def run(mode):
        if mode not in outcomes:
            outcomes[mode] = _run_ranks(tmp_path_factory.mktemp(mode), mode)
        return outcomes[mode]
    return run


def _run_ranks(tmp_path, mode):
    script = tmp_path / 'rank.py'
    script.write_text(RANK)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = str(s.getsockname()[1])
    marker = str(tmp_path / 'rank1_done')
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', RANK=str(rank),
                   LOCAL_RANK=str(rank), WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                   MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, str(script), mode, marker], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]) if out.strip() else None)
    return outs


@pytest.mark.parametrize('mode', ['success', 'failure'])
def test_the_group_is_destroyed_and_its_threads_joined_before_exit(run_ranks, mode):
    for threads in run_ranks(mode):
        assert threads['error'] is None
        assert threads['during'] > threads['before']  # gloo's workers and transport loop
        # back to the threads before the group: none is left for interpreter exit to stop
        assert threads['after'] == threads['before'], threads
        assert not threads['initialized']


def test_after_a_successful_run_the_ranks_meet_before_the_teardown(run_ranks):
    # rank 0 leaves only once the slower rank 1 is done with its run, so neither tears down
    # while the other may still have a collective in flight
    rank0, _ = run_ranks('success')
    assert rank0['peer_reached_close']


def test_after_a_failed_run_rank_0_closes_without_its_dead_peer(run_ranks):
    # a barrier here would fail (connection closed by peer) or wait the whole timeout
    rank0, rank1 = run_ranks('peer_died')
    assert rank1 is None
    assert rank0['error'] is None
    assert rank0['after'] == rank0['before'] and not rank0['initialized']


def test_a_peer_lost_at_the_closing_barrier_is_said_in_one_line_and_the_group_still_closes(
        run_ranks):
    rank0, rank1 = run_ranks('peer_died_before_barrier')
    assert rank1 is None
    assert 'lost contact with another rank' in rank0['error'], rank0['error']
    assert rank0['after'] == rank0['before'] and not rank0['initialized']
