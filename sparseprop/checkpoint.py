"""Save and restore a stream: params, carry (model state and traces) and optimizer state.

The leaves are written by equinox's `tree_serialise_leaves` (one `.npy` record per array,
bit for bit); this module adds what a stream that may crash needs on top:

- `save` writes to a temporary file in the same directory and renames it over the target
  (`os.replace`, atomic on POSIX and Windows), so a crash while saving leaves the previous
  checkpoint intact, never a half-written one;
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

    - `path`: the checkpoint file; its directory must exist.
    - `tree`: any pytree: `(params, carry, opt_state, step)` for a stream. Static parts
      (the tree's structure, a carry's trace layout) are not written: `load` takes them
      from its `like` argument.

    **Raises:**

    `OSError` when the file cannot be written (the previous checkpoint, if any, is kept).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            eqx.tree_serialise_leaves(f, tree)
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
      `jax.ShapeDtypeStruct`s.

    **Returns:**

    A pytree like `like` holding the saved values (bit for bit).

    **Raises:**

    `ValueError` when a saved leaf's shape or dtype differs from `like`'s (naming the leaf),
    or the file holds more or fewer leaves than `like`; `FileNotFoundError` without a file.
    """
    with open(path, "rb") as f:
        try:
            tree = eqx.tree_deserialise_leaves(f, like)
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
    return tree
