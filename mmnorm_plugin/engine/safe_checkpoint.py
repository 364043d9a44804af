"""Crash-safe, verified checkpoints for mmengine's Runner, without editing mmengine.

* ``AtomicLocalBackend`` (file backend ``'atomic_local'``): mmengine's ``LocalBackend`` whose
  ``put``/``put_text`` go through :func:`~mmnorm_plugin.checkpoint.safety.atomic_write`.
  ``Runner.save_checkpoint`` writes through the file backend named by the checkpoint hook's
  ``backend_args``, so ``default_hooks.checkpoint.backend_args=dict(backend='atomic_local')``
  makes even mmengine's own ``CheckpointHook`` write atomically.
* :class:`SafeCheckpointHook`: ``CheckpointHook`` that uses that backend for local folders,
  records a checksum in every checkpoint, writes ``last_checkpoint`` atomically and only after
  the checkpoint is in place, deletes outdated checkpoints only after that, and checks the
  checkpoint a run resumes from or loads before the Runner loads it (``--resume`` walks back to
  the newest intact one).

Our ``tools/train.py`` and ``tools/test.py`` turn the configs' ``CheckpointHook`` into
``SafeCheckpointHook`` (:func:`use_safe_checkpoint_hook`); any config opts in with
``default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', ...))``.
"""
import os
import os.path as osp
import pickle

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from ..checkpoint.safety import (LAST_CHECKPOINT, STATUS_TEXT, DamagedCheckpoint, add_checksum,
                                 atomic_write, checkpoint_problem, find_intact_checkpoint,
                                 resume_candidates, stale_temporaries, verification_status)

__all__ = ['AtomicLocalBackend', 'SafeCheckpointHook', 'use_safe_checkpoint_hook',
           'ATOMIC_BACKEND']

ATOMIC_BACKEND = 'atomic_local'


# a new name only: the '' (local path) prefix stays mmengine's LocalBackend for everybody else
@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose writes replace the file atomically (see ``atomic_write``)."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(str(filepath), obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(str(filepath), obj.encode(encoding))


def _is_local(out_dir) -> bool:
    return out_dir is None or '://' not in str(out_dir)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that a crash at any instant cannot leave with a broken checkpoint.

    Takes ``CheckpointHook``'s arguments. Differences:

    * Writes: for a local ``out_dir`` without ``backend_args``, checkpoints are written
      atomically (:class:`AtomicLocalBackend`); ``last_checkpoint`` is replaced atomically
      after the checkpoint is in place, and the checkpoint that ``max_keep_ckpts`` retires is
      deleted after that (mmengine deletes it *before* writing the new one, so a crash in
      between can leave no checkpoint at all with ``max_keep_ckpts=1``).
    * Checksums: ``meta['checksum']`` holds the SHA-256 of each section of the checkpoint
      (``before_save_checkpoint``; this hook's ``VERY_LOW`` priority runs it after the hooks
      that edit the checkpoint, e.g. ``EMAHook``).
    * Loads (``before_run``, before the Runner loads anything): an auto ``--resume`` skips
      checkpoints that do not load or verify, logging each with the reason, and resumes from
      the newest intact one; an explicit ``--resume PATH`` or ``load_from`` that is damaged
      stops the run with :class:`DamagedCheckpoint` (naming the newest intact alternative).
      Checkpoints without a checksum (plain mmdet ones) load unverified. This check only
      chooses the file: the Runner's own load of it goes through
      :class:`~mmnorm_plugin.engine.guarded_loading.GuardedCheckpointLoadHook`, which reads,
      verifies and loads the same bytes again (a file changed in between is caught there).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if (self.backend_args is None and self.file_client_args is None
                and _is_local(self.out_dir)):
            self.backend_args = dict(backend=ATOMIC_BACKEND)

    # ---------------------------------------------------------------------------- loading
    def before_run(self, runner) -> None:
        super().before_run(runner)
        # mmengine 0.10 has no public accessor: load_or_resume() reads these two right after
        # before_run, and resumes from _load_from when it is set
        if getattr(runner, '_has_loaded', False):
            return
        load_from, resume = runner._load_from, runner._resume
        if resume and load_from is None:
            chosen = self._newest_intact(runner)
            if chosen is not None:
                runner._load_from = chosen
        elif load_from is not None and osp.isfile(load_from):  # URLs: mmengine's loaders
            problem = checkpoint_problem(load_from)
            if problem is None:
                return
            advice = ''
            if resume:
                candidates = [p for p in self._candidates(runner, osp.dirname(load_from))
                              if osp.realpath(p) != osp.realpath(load_from)]
                try:
                    intact, _ = find_intact_checkpoint(candidates)
                except pickle.UnpicklingError:  # the advice must not hide the error itself
                    intact = None
                advice = (f'; the newest intact checkpoint is {intact}: resume with --resume '
                          f'{intact}, or --resume alone to pick it automatically' if intact
                          else '; no other checkpoint next to it loads and verifies')
            raise DamagedCheckpoint.of(load_from, problem + advice)

    def _candidates(self, runner, *extra_dirs):
        if self.out_dir is not None and _is_local(self.out_dir):
            # where before_train will put this run's checkpoints (mmengine's rule)
            extra_dirs += (osp.join(self.out_dir, osp.basename(runner.work_dir.rstrip(os.sep))),)
        return resume_candidates(runner.work_dir, self.filename_tmpl, extra_dirs)

    def _newest_intact(self, runner):
        candidates = self._candidates(runner)
        if not candidates:  # nothing saved yet: mmengine starts from scratch
            return None
        chosen, skipped = find_intact_checkpoint(candidates)
        for path, why in skipped:
            runner.logger.warning(f'--resume: skipping checkpoint {path}: {why}')
        if chosen is None:
            raise DamagedCheckpoint(
                f'--resume: no checkpoint of {runner.work_dir} loads and verifies ('
                + '; '.join(f'{osp.basename(p)}: {why}' for p, why in skipped)
                + '): start over without --resume, or in another --work-dir')
        runner.logger.info(
            f'--resume: resuming from {chosen}'
            + (' (newest intact checkpoint)' if skipped else '')
            + f'; {STATUS_TEXT.get(verification_status(chosen), "not checked")}')
        return chosen

    # ---------------------------------------------------------------------------- saving
    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not is_main_process():
            return
        # a run killed inside atomic_write leaves its temporary (a whole checkpoint's size)
        folders = {runner.work_dir} | ({self.out_dir} if _is_local(self.out_dir) else set())
        for folder in sorted(folders):
            for path in stale_temporaries(folder):
                os.remove(path)
                runner.logger.info(f'removed {path}, left by a run killed while saving')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        add_checksum(checkpoint)

    def _save_checkpoint_with_step(self, runner, step, meta):
        # mmengine's bookkeeping, in a crash-safe order: new checkpoint, then last_checkpoint,
        # then the deletion of the checkpoint max_keep_ckpts retires
        retired = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                retired = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():  # rank 0 saves (Runner.save_checkpoint is master_only)
            return
        atomic_write(osp.join(runner.work_dir, LAST_CHECKPOINT), str(self.last_ckpt).encode())
        if retired is not None:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(retired))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed checkpoints are folders
                self.file_backend.rmtree(path)


def use_safe_checkpoint_hook(cfg) -> None:
    """Turn ``cfg``'s ``CheckpointHook`` into :class:`SafeCheckpointHook` (same arguments).

    Other checkpoint hooks (subclasses, ``None``) are left alone. A user who wants mmengine's
    hook back passes ``--cfg-options default_hooks.checkpoint.type=CheckpointHook`` (merged
    after this).
    """
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if hook is not None and hook.get('type') in ('CheckpointHook', CheckpointHook):
        hook['type'] = 'SafeCheckpointHook'
