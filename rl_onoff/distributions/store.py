"""01's arrays on disk: written without holding them in memory, read lazily, never unpickled.

`distributions.npz` is an uncompressed NPZ (a zip of .npy files) of flat arrays
over all generated tokens, samples one after another in (question, sample)
order; `distributions.json` gives each sample's `start` and `length` in them:

    token_ids        (T,)    int32    the ids 00 sampled, EOS included
    entropy          (T,)    float32  entropy at T=1 of the full next-token distribution, nats
    sampled_entropy  (T,)    float32  entropy of the distribution 00 sampled from
    logprob          (T,)    float32  log-probability of the sampled token at T=1
    sampled_logprob  (T,)    float32  its log-probability under the distribution 00 sampled
                                      from; -inf where that distribution's filters drop it
    rank             (T,)    int32    logits strictly above the sampled token's (0: the argmax)
    topk_ids         (T, k)  int32    the k most likely tokens, most likely first
    topk_probs       (T, k)  float32  their probabilities at T=1
    probs            (T, V)  float32  instead of topk_*, when top_k is null: the whole distribution
    sampler_delta    (T,)    float32  only where 00 stored sampler_logprobs: log pi_sampler -
                                      log pi_trainer of the sampled token, both under 00's
                                      sampling transform (sampler: 00's log-prob as drawn;
                                      trainer: sampled_logprob); +inf where the trainer's filters
                                      drop the token. Run summary: `sampler_gap` in the JSON
                                      (rl_onoff.distributions.gap)

Because the members are stored, not compressed, each is a plain .npy at a fixed
offset inside the zip: the loader reads its header once, then reads a sample's
rows straight from the file (resident memory stays the size of what was asked
for, however large the file) or memory-maps a whole array for scans over all
tokens. Opening a run reads the JSON only.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from rl_onoff import io

JSON_NAME, NPZ_NAME = "distributions.json", "distributions.npz"
TOKEN_ARRAYS = {"token_ids": np.int32, "entropy": np.float32, "sampled_entropy": np.float32,
                "logprob": np.float32, "sampled_logprob": np.float32, "rank": np.int32}


def array_specs(num_tokens: int, top_k: int | None, vocab_size: int,
                sampler_gap: bool = False) -> dict[str, tuple]:
    """name -> (dtype, shape) of every array the NPZ will hold."""
    specs = {name: (np.dtype(dtype), (num_tokens,)) for name, dtype in TOKEN_ARRAYS.items()}
    if sampler_gap:
        specs["sampler_delta"] = (np.dtype(np.float32), (num_tokens,))
    if top_k is None:
        specs["probs"] = (np.dtype(np.float32), (num_tokens, vocab_size))
    else:
        k = min(top_k, vocab_size)
        specs["topk_ids"] = (np.dtype(np.int32), (num_tokens, k))
        specs["topk_probs"] = (np.dtype(np.float32), (num_tokens, k))
    return specs


def nbytes(specs: dict[str, tuple]) -> int:
    return sum(dtype.itemsize * int(np.prod(shape)) for dtype, shape in specs.values())


class FlatArrays:
    """The arrays while they are filled: .npy memory maps in a scratch directory beside the
    output, so that a multi-GB result never sits in memory; `save` streams them into the NPZ.
    Use as a context manager: the scratch directory goes away however the block ends."""

    def __init__(self, directory: Path, specs: dict[str, tuple]):
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(dir=directory, prefix=".01-dist-scratch-"))
        self.arrays = {name: np.lib.format.open_memmap(self.scratch / f"{name}.npy", mode="w+",
                                                       dtype=dtype, shape=shape)
                       for name, (dtype, shape) in specs.items()}

    def write(self, rows: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Put `values` (arrays over len(rows) tokens) at token positions `rows`."""
        for name, value in values.items():
            self.arrays[name][rows] = value

    def save(self, path: Path) -> None:
        """The NPZ, uncompressed and atomically (np.savez copies a memmap in 16 MiB pieces)."""
        for array in self.arrays.values():
            array.flush()
        io.save_npz(path, self.arrays)

    def __enter__(self) -> "FlatArrays":
        return self

    def __exit__(self, *exc) -> None:
        self.arrays.clear()
        shutil.rmtree(self.scratch, ignore_errors=True)


def npz_members(path: Path) -> dict[str, tuple[int, np.dtype, tuple, bool]]:
    """name -> (data offset in the file, dtype, shape, fortran order) of each array of an
    uncompressed NPZ, read from the zip's local headers and the .npy headers."""
    members = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{path}: array {name!r} is compressed; 01-dist writes "
                                 "stored (uncompressed) members, which can be memory-mapped")
            raw.seek(info.header_offset)
            local = raw.read(30)
            if local[:4] != b"PK\x03\x04":
                raise ValueError(f"{path}: no zip local header for {name!r}")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            raw.seek(info.header_offset + 30 + name_len + extra_len)
            shape, fortran, dtype = _npy_header(raw, f"{path}:{name}")
            members[name] = (raw.tell(), dtype, shape, fortran)
    return members


def _npy_header(handle, where: str):
    version = np.lib.format.read_magic(handle)
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"{where}: .npy format {version} is not supported")
    shape, fortran, dtype = readers[version](handle)
    if dtype.hasobject:
        raise ValueError(f"{where}: holds Python objects; refusing to unpickle them")
    return shape, fortran, dtype


class Distributions:
    """01's output: the JSON in memory, the arrays read from the NPZ when asked for.

        dist = load_distributions("exp/01-dist/output")
        dist.sample(0, 3)["entropy"]       # question 0, sample 3: only its rows are read
        dist.record(0, 3)["mean_entropy"]  # the per-sample scalars from the JSON
        dist.array("entropy")              # the flat array over all tokens (a read-only memmap)
        dist.token_string(id)              # how a token id reads ("\\n", " the", ...)
    """

    def __init__(self, json_path: Path):
        self.json_path = Path(json_path)
        self.meta = io.read_json(self.json_path)
        self.npz_path = self.json_path.with_name(NPZ_NAME)
        self._members: dict | None = None
        self._maps: dict[str, np.ndarray] = {}
        self._strings = {int(i): s for i, s in self.meta["token_strings"].items()}

    @property
    def questions(self) -> list[dict]:
        return self.meta["questions"]

    @property
    def names(self) -> list[str]:
        return list(self.meta["arrays"])

    def record(self, question: int, sample: int) -> dict:
        return self.questions[question]["samples"][sample]

    def array(self, name: str) -> np.ndarray:
        """The whole flat array `name`, memory-mapped read-only: pages are read (and count
        as resident) as they are touched, so scan it in pieces if it is large."""
        if name not in self._maps:
            offset, dtype, shape, fortran = self._member(name)
            self._maps[name] = np.memmap(self.npz_path, dtype=dtype, mode="r", offset=offset,
                                         shape=shape, order="F" if fortran else "C")
        return self._maps[name]

    def sample(self, question: int, sample: int, names=None) -> dict[str, np.ndarray]:
        """One sample's rows of the arrays `names` (default: all), read from the file."""
        rec = self.record(question, sample)
        with open(self.npz_path, "rb") as handle:
            return {name: self._rows(handle, name, rec["start"], rec["length"])
                    for name in (names or self.names)}

    def _rows(self, handle, name: str, start: int, count: int) -> np.ndarray:
        offset, dtype, shape, fortran = self._member(name)
        if fortran:  # rows are not contiguous on disk
            return np.array(self.array(name)[start:start + count])
        per_row = int(np.prod(shape[1:], dtype=np.int64))
        handle.seek(offset + start * per_row * dtype.itemsize)
        data = np.fromfile(handle, dtype=dtype, count=count * per_row)
        return data.reshape((count, *shape[1:]))

    def token_string(self, token_id: int) -> str:
        return self._strings[int(token_id)]

    def verify(self) -> None:
        """Check every member of the NPZ against the CRC-32 its zip directory records (about
        a second per GB): a file damaged after it was written fails here, naming the array,
        instead of being read as numbers."""
        self._members = npz_members(self.npz_path)  # stored, pickle-free members only
        with zipfile.ZipFile(self.npz_path) as archive, open(self.npz_path, "rb") as raw:
            for info in archive.infolist():
                raw.seek(info.header_offset)
                name_len, extra_len = struct.unpack("<HH", raw.read(30)[26:30])
                raw.seek(info.header_offset + 30 + name_len + extra_len)
                crc, left = 0, info.file_size
                while left:
                    block = raw.read(min(left, 1 << 18))
                    if not block:
                        break
                    crc, left = zlib.crc32(block, crc), left - len(block)
                if left or crc != info.CRC:
                    raise ValueError(
                        f"{self.npz_path}: array {info.filename.removesuffix('.npy')!r} is "
                        "damaged (its CRC-32 does not match what was written); rerun "
                        "exp/01-dist.py to rewrite it")

    def _member(self, name: str) -> tuple[int, np.dtype, tuple, bool]:
        """Where array `name` lies in the NPZ, checked against what the JSON says."""
        if self._members is None:
            self._members = npz_members(self.npz_path)
        if name not in self._members:
            raise KeyError(f"{self.npz_path} has no array {name!r}; it has {sorted(self._members)}")
        _, dtype, shape, _ = member = self._members[name]
        expected = self.meta["arrays"][name]
        if list(shape) != expected["shape"] or str(dtype) != expected["dtype"]:
            raise ValueError(f"{self.npz_path}: {name} is {dtype}{list(shape)} but "
                             f"{self.json_path.name} expects {expected['dtype']}"
                             f"{expected['shape']}; the two files are from different runs")
        return member


def load_distributions(path: str | Path, verify: bool = True) -> Distributions:
    """Open 01's output: its directory or its distributions.json; `verify` checks the NPZ's
    checksums first (see Distributions.verify)."""
    path = Path(path)
    json_path = path / JSON_NAME if path.is_dir() else path
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path} not found; run exp/01-dist.py first "
                                "(or point at its output directory)")
    run = Distributions(json_path)
    if verify:
        run.verify()
    return run
