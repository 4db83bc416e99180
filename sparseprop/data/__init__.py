"""Data for spiking networks: spike encoders and the Spiking Heidelberg Digits loader.

- `rate_encode`, `latency_encode` (`sparseprop.data.encoding`): analogue values to spike trains.
- `sparseprop.data.shd`: read SHD HDF5 files (`read_shd`), bin events into frames
  (`bin_events`) and iterate padded batches (`batches`). h5py is imported only when a
  file is read.
"""
from . import encoding, shd
from .encoding import latency_encode, rate_encode
from .shd import SHDBatch, SHDEvents, SHDNotFoundError, batches, bin_events, read_shd

__all__ = ["encoding", "shd", "rate_encode", "latency_encode", "read_shd", "bin_events", "batches",
           "SHDEvents", "SHDBatch", "SHDNotFoundError"]
