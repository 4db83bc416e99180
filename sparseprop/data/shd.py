"""The Spiking Heidelberg Digits (SHD) data set, read from its HDF5 files.

SHD (Cramer, Stradmann, Schemmel & Zenke, 2020) holds spoken digits 0–9 in English and
German (20 classes) as spike events from 700 cochlea-model channels. Its files
`shd_train.h5` and `shd_test.h5` (from https://zenkelab.org/datasets) have this layout:

    spikes/times   one variable-length float array per sample: event times in seconds
    spikes/units   one variable-length int array per sample: the channel (0..699) of each event
    labels         one int per sample: the class (0..19)

`read_shd` loads the events; `bin_events` turns one sample into frames of `dt` seconds;
`batches` yields padded, binned batches ready for `jax.vmap(learner.run)`. Binning is
done per batch, because the whole training set binned at 1 ms would take gigabytes.
"""
from __future__ import annotations

import os
from typing import Iterator, List, NamedTuple, Optional

import numpy as np

__all__ = ["SHD_NUM_UNITS", "SHD_NUM_CLASSES", "SHD_URL", "SHDNotFoundError", "SHDEvents", "SHDBatch",
           "read_shd", "bin_events", "num_frames", "batches"]

SHD_NUM_UNITS = 700
SHD_NUM_CLASSES = 20
SHD_URL = "https://zenkelab.org/datasets"

EXPECTED_LAYOUT = ("an HDF5 file with datasets 'spikes/times' (one variable-length float array of event "
                   "times in seconds per sample), 'spikes/units' (one variable-length int array of "
                   "channel indices per sample) and 'labels' (one int class per sample)")


class SHDNotFoundError(FileNotFoundError):
    """The SHD file is not where it was looked for; the message says where to get it."""


class SHDEvents(NamedTuple):
    """SHD samples as raw events.

    - `times`: a list with one float64 array of event times (seconds) per sample.
    - `units`: a list with one int array of channel indices per sample.
    - `labels`: an int64 array of classes, one per sample.
    - `num_units`: the number of input channels (700 for SHD).
    """
    times: List[np.ndarray]
    units: List[np.ndarray]
    labels: np.ndarray
    num_units: int


class SHDBatch(NamedTuple):
    """One padded batch.

    - `inputs`: `(batch, num_steps, num_units)` float32 spike counts per frame (zeros in padding).
    - `labels`: `(batch,)` int32 classes (0 for padding rows).
    - `lengths`: `(batch,)` int32 number of frames that hold the sample (the rest is padding).
    - `valid`: `(batch,)` bool, False for the rows that only pad the last batch to full size.
    """
    inputs: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    valid: np.ndarray


def _import_h5py():
    # h5py is only needed for this loader, so the library itself does not depend on it.
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - exercised only without h5py
        raise ImportError("sparseprop.data.shd needs h5py to read SHD files: pip install h5py "
                          "(or pip install 'sparseprop[examples]')") from e
    return h5py


def missing_file_message(path) -> str:
    """The message for a missing SHD file: where SHD comes from and what layout is expected."""
    return (f"SHD file not found: {os.fspath(path)!r}.\n"
            f"The Spiking Heidelberg Digits come from {SHD_URL} (files shd_train.h5.gz and "
            f"shd_test.h5.gz; gunzip them to shd_train.h5 / shd_test.h5) and pass the path of one of them.\n"
            f"Expected layout: {EXPECTED_LAYOUT}.")


def read_shd(path, max_samples: Optional[int] = None) -> SHDEvents:
    """Read the events of an SHD HDF5 file.

    **Arguments:**

    - `path`: the file, e.g. `shd_train.h5`.
    - `max_samples`: read only the first this many samples (quick runs).

    **Returns:**

    An `SHDEvents(times, units, labels, num_units)`; `num_units` is 700, or more if the
    file holds larger channel indices.

    **Raises:**

    `SHDNotFoundError` (a `FileNotFoundError`) if the file does not exist, saying where to
    download SHD; `ValueError` if the file lacks the expected datasets or they disagree.
    """
    if not os.path.isfile(path):
        raise SHDNotFoundError(missing_file_message(path))
    h5py = _import_h5py()
    with h5py.File(path, "r") as f:
        missing = [name for name in ("spikes/times", "spikes/units", "labels") if name not in f]
        if missing:
            raise ValueError(f"{os.fspath(path)!r} is not an SHD file: it lacks {', '.join(missing)}. "
                             f"Expected {EXPECTED_LAYOUT}.")
        n = len(f["labels"])
        if max_samples is not None:
            n = min(n, int(max_samples))
        # Variable-length datasets are read row by row into object arrays; slicing first
        # keeps a --max-samples run from reading the whole file.
        times = [np.asarray(t, np.float64) for t in f["spikes/times"][:n]]
        units = [np.asarray(u, np.int64) for u in f["spikes/units"][:n]]
        labels = np.asarray(f["labels"][:n], np.int64)
    if len(times) != n or len(units) != n:
        raise ValueError(f"{os.fspath(path)!r}: spikes/times, spikes/units and labels have different "
                         f"numbers of samples ({len(times)}, {len(units)}, {n})")
    num_units = SHD_NUM_UNITS
    for i, (t, u) in enumerate(zip(times, units)):
        if t.shape != u.shape:
            raise ValueError(f"{os.fspath(path)!r}: sample {i} has {t.size} spike times but {u.size} units")
        if u.size:
            if u.min() < 0:
                raise ValueError(f"{os.fspath(path)!r}: sample {i} has a negative unit index")
            num_units = max(num_units, int(u.max()) + 1)
    return SHDEvents(times, units, labels, num_units)


def num_frames(times: np.ndarray, dt: float) -> int:
    """Frames of `dt` seconds needed to hold every event of one sample (0 for no events)."""
    if len(times) == 0:
        return 0
    return int(np.floor(np.max(times) / dt)) + 1


def bin_events(times, units, *, dt: float, num_steps: int, num_units: int = SHD_NUM_UNITS,
               downsample: int = 1, binary: bool = False, dtype=np.float32) -> np.ndarray:
    """Bin one sample's events into frames.

    The event at time `t` on channel `u` adds 1 to frame `floor(t / dt)`, channel
    `u // downsample`. Events at or after `num_steps · dt` are dropped (truncation).

    **Arguments:**

    - `times`, `units`: the sample's event times (seconds) and channels.
    - `dt`: frame length in seconds.
    - `num_steps`: number of frames in the result.
    - `num_units`: channels before downsampling (700 for SHD).
    - `downsample`: merge this many neighbouring channels into one input (700 / 5 = 140).
    - `binary`: clip counts to 1 (a spike or not) instead of counting events.
    - `dtype`: the result's dtype.

    **Returns:**

    An array `(num_steps, ceil(num_units / downsample))` of event counts.
    """
    if dt <= 0:
        raise ValueError(f"dt must be positive, got {dt}")
    if downsample < 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")
    times = np.asarray(times, np.float64)
    units = np.asarray(units, np.int64)
    frames = np.zeros((num_steps, -(-num_units // downsample)), dtype)
    frame = np.floor(times / dt).astype(np.int64)
    keep = (frame >= 0) & (frame < num_steps)
    np.add.at(frames, (frame[keep], units[keep] // downsample), 1)
    if binary:
        np.minimum(frames, 1, out=frames)
    return frames


def batches(events: SHDEvents, batch_size: int, *, dt: float = 0.01, num_steps: Optional[int] = None,
            downsample: int = 1, binary: bool = False, shuffle: bool = False, seed: int = 0,
            drop_last: bool = False) -> Iterator[SHDBatch]:
    """Binned, padded batches of an SHD split.

    **Arguments:**

    - `events`: from `read_shd`.
    - `batch_size`: samples per batch. The last batch is padded to full size with empty
      rows marked `valid=False` (so a jitted step sees one shape), unless `drop_last`.
    - `dt`: frame length in seconds (SHD samples last up to about 1.4 s: 0.01 gives ≈140 frames).
    - `num_steps`: frames per sample; longer samples are truncated, shorter ones zero-padded.
      `None` pads each batch to its longest sample instead (shapes then vary per batch).
    - `downsample`, `binary`: as for `bin_events`.
    - `shuffle`, `seed`: visit the samples in a random order drawn from `seed`.
    - `drop_last`: skip the final incomplete batch.

    **Returns:**

    An iterator of `SHDBatch(inputs, labels, lengths, valid)`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(events.labels)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if drop_last and len(idx) < batch_size:
            return
        lengths = np.array([num_frames(events.times[i], dt) for i in idx], np.int64)
        steps = num_steps if num_steps is not None else max(int(lengths.max(initial=0)), 1)
        inputs = np.zeros((batch_size, steps, -(-events.num_units // downsample)), np.float32)
        for row, i in enumerate(idx):
            inputs[row] = bin_events(events.times[i], events.units[i], dt=dt, num_steps=steps,
                                     num_units=events.num_units, downsample=downsample, binary=binary)
        labels = np.zeros(batch_size, np.int32)
        labels[:len(idx)] = events.labels[idx]
        lens = np.zeros(batch_size, np.int32)
        lens[:len(idx)] = np.minimum(lengths, steps)
        valid = np.arange(batch_size) < len(idx)
        yield SHDBatch(inputs, labels, lens, valid)
