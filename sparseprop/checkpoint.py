"""Save and restore a stream: params, carry (model state and traces) and optimizer state.

The leaves are written by equinox's `tree_serialise_leaves` (one `.npy` record per array,
bit for bit); this module adds what a stream that may crash needs on top:

- `save` writes to a temporary file in the same directory and renames it over the target
  (`os.replace`, atomic on POSIX and Windows), so a crash while saving leaves the previous
  checkpoint intact, never a half-written one (the temporary file such a crash may leave is
  removed by the next `save` or `load` of that checkpoint);
- typed PRNG keys (`jax.random.key`) are written as their key data and restored as typed
  keys of the implementation of `like`'s;
- `load` raises a `ValueError` naming the leaf when a shape or dtype differs from `like`'s
  (equinox's check) and when the file holds more or fewer leaves than `like`, instead of
  silently loading a checkpoint of another model or optimizer.

```python
from sparseprop import checkpoint
checkpoint.save("stream.eqx", (params, carry, opt_state, step))
like = (params0, learner.init(params0, state0, x0), optimizer.init(params0), 0)
params, carry, opt_state, step = checkpoint.load("stream.eqx", like)
```
"""
from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path
from typing import Any, Union

import equinox as eqx
import jax

__all__ = ["save", "load"]


def save(path: Union[str, Path], tree: Any) -> None:
    """Write a pytree of arrays (and Python scalars) to `path`, atomically.

    **Arguments:**

    - `path`: the checkpoint file; missing directories are created. Temporary files that a
      killed save of this checkpoint left next to it are removed first.
    - `tree`: any pytree: `(params, carry, opt_state, step)` for a stream; typed PRNG keys
      (`jax.random.key`) are written as their `jax.random.key_data`. Static parts
      (the tree's structure, a carry's trace layout) are not written: `load` takes them
      from its `like` argument.

    **Raises:**

    `OSError` when the file cannot be written (the previous checkpoint, if any, is kept).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=_TMP, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            eqx.tree_serialise_leaves(f, jax.tree_util.tree_map(_key_data, tree))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: Union[str, Path], like: Any) -> Any:
    """Read a pytree written by `save`.

    **Arguments:**

    - `path`: the checkpoint file.
    - `like`: a pytree of the same structure, shapes and dtypes (e.g. freshly initialised
      params, `learner.init(params, state0, x0)` and `optimizer.init(params)`); arrays or
      `jax.ShapeDtypeStruct`s. A typed PRNG key in `like` is restored as a typed key of the
      same implementation (`jax.random.wrap_key_data`).

    **Returns:**

    A pytree like `like` holding the saved values (bit for bit). Temporary files that a
    killed save of this checkpoint left are removed.

    **Raises:**

    `ValueError` when a saved leaf's shape or dtype differs from `like`'s (naming the leaf),
    or the file holds more or fewer leaves than `like`; `FileNotFoundError` without a file.
    """
    _remove_stale(Path(path))
    with open(path, "rb") as f:
        try:
            tree = eqx.tree_deserialise_leaves(f, jax.tree_util.tree_map(_key_data, like))
        except Exception as e:
            causes = [e]
            while causes[-1].__cause__ is not None:
                causes.append(causes[-1].__cause__)
            if any(isinstance(c, EOFError) for c in causes):
                raise ValueError(f"{path} holds fewer arrays than `like` ({len(jax.tree_util.tree_leaves(like))} "
                                 f"leaves): it was saved from another model, learner or optimizer state") from e
            detail = "; ".join(f"{type(c).__name__}: {c}" for c in causes)
            raise ValueError(f"{path} does not fit `like`: {detail}. It was saved from another model, learner "
                             f"or optimizer (or with another jax_enable_x64 setting).") from e
        if f.read(1):
            raise ValueError(f"{path} holds more arrays than `like` ({len(jax.tree_util.tree_leaves(like))} "
                             f"leaves): it was saved from another model, learner or optimizer state")
    return jax.tree_util.tree_map(_wrap_key, like, tree)


# a save's temporary file: "<name>.<random>.tmp" next to the checkpoint
_TMP = ".tmp"


def _remove_stale(path: Path) -> None:
    """Delete the temporary files a killed `save` of this checkpoint left behind (the rename
    never happened, so they hold nothing the checkpoint needs). Two processes must not save
    the same checkpoint at once: one would remove the other's file."""
    for tmp in path.parent.glob(glob.escape(path.name) + ".*" + _TMP):
        try:
            tmp.unlink()
        except FileNotFoundError:   # another process removed it first
            pass


def _is_key(v) -> bool:
    dtype = getattr(v, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _key_data(v):
    """A typed PRNG key (`jax.random.key`) is written as its raw uint32 data."""
    if not _is_key(v):
        return v
    if isinstance(v, jax.ShapeDtypeStruct):
        return jax.eval_shape(jax.random.key_data, v)
    return jax.random.key_data(v)


def _wrap_key(like, v):
    """The typed key again, with the implementation (threefry, rbg, ...) of `like`'s key."""
    if not _is_key(like):
        return v
    # a ShapeDtypeStruct has no public accessor for its key implementation: read its dtype's
    return jax.random.wrap_key_data(v, impl=jax.random.key_impl(like) if isinstance(like, jax.Array)
                                    else like.dtype._impl)
