"""The torch.save files sramsim reads: every loader stays weights_only (a pickle that would run
code is refused and runs nothing), every file carries a SHA-256 of its contents that is verified
on load (flipped bytes are refused, naming the file), and files saved before the digest still
load, with a note."""
import io
import logging
import zipfile

import pytest
import torch

from fusion import eopm, store
from sramsim.commands.main import main
from sramsim.errors import InputError
from sramsim.nn import models, stdp, training
from sramsim.nn.torch_files import DIGEST_KEY, content_sha256


class Payload:
    """Unpickling this creates `marker`: what a hostile file would run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _eopm_load(path):
    from test_eopm import make_trainer
    make_trainer().load_checkpoint(path)


def _train_resume(path):
    model = models.build("cnn")
    opts = training.TrainOptions()
    opt = training._optimizer(model, opts)
    training._resume(path, {}, model, opt, training._scheduler(opt, opts, 1))


def _stdp_resume(path):
    stdp._resume(path, {}, models.build("diehl-cook10"))


def _generator_load(path):
    store.load_generator(path)


# every loader of a torch.save file in sramsim and fusion: (format tag, version, load(path))
LOADERS = {
    "model checkpoint": (models.CHECKPOINT_FORMAT, models.CHECKPOINT_VERSION,
                         models.load_checkpoint),
    "training state": (training.STATE_FORMAT, training.STATE_VERSION, _train_resume),
    "stdp state": (stdp.STATE_FORMAT, stdp.STATE_VERSION, _stdp_resume),
    "fusion generator": (store.FORMAT, store.VERSION, _generator_load),
    "eopm checkpoint": (eopm.CHECKPOINT_FORMAT, eopm.CHECKPOINT_VERSION, _eopm_load),
}


@pytest.mark.parametrize("loader", LOADERS)
def test_every_loader_is_weights_only(tmp_path, loader):
    fmt, version, load = LOADERS[loader]
    marker = tmp_path / "ran"
    path = tmp_path / "hostile.pt"
    torch.save({"format": fmt, "version": version, "meta": Payload(str(marker))}, path)
    with pytest.raises(InputError, match="not a readable"):
        load(path)
    assert not marker.exists()


def flip_tensor_bytes(path, count: int = 2000) -> None:
    """XOR 0xFF into `count` mantissa bytes of the largest tensor record (no NaN or inf made),
    leaving the zip structure intact: torch still reads the file, with other weights."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = (int.from_bytes(data[info.header_offset + k:info.header_offset + k + 2],
                                          "little") for k in (26, 28))
    start = info.header_offset + 30 + name_len + extra_len
    positions = [start + p for p in range(0, info.file_size) if p % 4 != 3][:count]
    assert len(positions) == count
    for p in positions:
        data[p] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_are_refused_naming_the_file(cnn_checkpoint, capsys):
    path, _ = cnn_checkpoint
    flip_tensor_bytes(path)
    obj = torch.load(path, weights_only=True)        # torch itself reads it without complaint
    assert obj[DIGEST_KEY] != content_sha256({k: v for k, v in obj.items() if k != DIGEST_KEY})
    with pytest.raises(InputError, match="corrupt") as err:
        models.load_checkpoint(path)
    assert str(path) in str(err.value)
    assert main(["energy", "--model", str(path), "--voltage", "0.9"]) == 2
    out = capsys.readouterr().err
    assert len(out.splitlines()) == 1 and "corrupt" in out and str(path) in out


def test_digest_is_stored_and_round_trips(cnn_checkpoint):
    path, model = cnn_checkpoint
    obj = torch.load(path, weights_only=True)
    digest = obj.pop(DIGEST_KEY)
    assert len(digest) == 64 and digest == content_sha256(obj)
    loaded, meta = models.load_checkpoint(path)
    assert DIGEST_KEY not in meta
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 loaded.state_dict().values()))


def test_digest_sees_any_change():
    base = {"meta": {"bits": 8, "clip": None}, "w": torch.arange(6.0).reshape(2, 3)}
    same = {"meta": {"bits": 8, "clip": None}, "w": torch.arange(6.0).reshape(2, 3)}
    assert content_sha256(base) == content_sha256(same)
    for changed in ({"meta": {"bits": 4, "clip": None}, "w": base["w"]},
                    {"meta": base["meta"], "w": base["w"].reshape(3, 2)},
                    {"meta": base["meta"], "w": base["w"].double()},
                    {"meta": base["meta"], "w": base["w"] + 1e-6}):
        assert content_sha256(changed) != content_sha256(base)


def test_old_checkpoint_without_digest_loads_with_a_note(cnn_checkpoint, caplog):
    path, model = cnn_checkpoint
    obj = torch.load(path, weights_only=True)
    del obj[DIGEST_KEY]
    torch.save(obj, path)                             # as sramsim wrote it before the digest
    with caplog.at_level(logging.WARNING, logger="sramsim.files"):
        loaded, _ = models.load_checkpoint(path)
    notes = [r.getMessage() for r in caplog.records if r.name == "sramsim.files"]
    assert len(notes) == 1 and str(path) in notes[0] and "SHA-256" in notes[0]
    assert "\n" not in notes[0]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 loaded.state_dict().values()))
