"""Data for spiking networks: spike encoders and the Spiking Heidelberg Digits loader.

- `rate_encode`, `latency_encode` (`sparseprop.data.encoding`): analogue values to spike trains;
  `delta_encode`: a changing signal to change events (delta modulation).
- `sparseprop.data.shd`: read SHD HDF5 files (`read_shd`), bin events into frames
  (`bin_events`) and iterate padded batches (`batches`). h5py is imported only when a
  file is read.
- `yinyang` (`sparseprop.data.yinyang`): the Yin-Yang classification data set (Kriener,
  Göltz & Petrovici 2021), generated from its formula, and its spike-time encoding.
"""
from . import encoding, shd
from .encoding import delta_encode, latency_encode, rate_encode
from .shd import SHDBatch, SHDEvents, SHDNotFoundError, batches, bin_events, read_shd
from .yinyang import YinYang, encode_spike_times, yinyang, yinyang_class

__all__ = ["encoding", "shd", "rate_encode", "latency_encode", "delta_encode", "read_shd", "bin_events", "batches",
           "SHDEvents", "SHDBatch", "SHDNotFoundError",
           "yinyang", "yinyang_class", "YinYang", "encode_spike_times"]
