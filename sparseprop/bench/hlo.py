"""Bytes a compiled time loop moves per step, read off XLA's optimised HLO, and the machine's
streaming bandwidth: together a floor on the time per step of a memory-bound program.

`loop_body_bytes` parses the text of `jax.jit(fn).lower(*args).compile().as_text()`, takes the
while-loop body that moves the most bytes (one iteration = one time step of a `lax.scan`) and
sums, over its top-level instructions, the bytes each one reads (its operands) and writes (its
result). A buffer is counted once per instruction that touches it, as if nothing stayed in
cache between instructions: for arrays larger than the cache that is what the hardware does.
Two refinements keep the scan's bookkeeping honest: an operand that is only sliced
(`dynamic-slice`, `slice`, in a fusion or not) counts the slice, and a `dynamic-update-slice`
into an operand (in place: XLA aliases the buffer) counts the update, not the whole buffer.
"""
from __future__ import annotations

import re
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

#: bytes per element of XLA's primitive types
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
#: instructions that move no data (aliases, tuple plumbing, literals)
_FREE = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast", "after-all", "partition-id",
         "replica-id", "opt-barrier"}
_SHAPE = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")
_LINE = re.compile(r"^\s*(ROOT )?(%[\w.\-]+) = (.*?) ([\w\-]+)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY )?(%[\w.\-]+) .*?\{\n(.*?)\n\}", re.S | re.M)


def shape_bytes(text: str) -> int:
    """Bytes of every array shape written in `text` (one shape, or a tuple of them).

    **Arguments:**

    - `text`: an HLO type, such as `f32[16,256,128]{2,1,0}` or `(s32[], f32[4]{0})`.

    **Returns:**

    The summed size in bytes (a scalar `f32[]` is 4).
    """
    total = 0
    for dtype, dims in _SHAPE.findall(text):
        size = _DTYPE_BYTES[dtype]
        for d in filter(None, dims.split(",")):
            size *= int(d)
        total += size
    return total


def _instruction(line: str) -> Optional[dict]:
    """One HLO line as `{name, type, op, operands, attrs, root}` (None for a non-instruction line)."""
    head = _LINE.match(line)
    if not head:
        return None
    depth, end = 1, head.end()
    while depth and end < len(line):          # the operand list runs to its matching ")"
        depth += {"(": 1, ")": -1}.get(line[end], 0)
        end += 1
    inside = line[head.end():end - 1]
    return dict(name=head[2], type=head[3], op=head[4], root=bool(head[1]), attrs=line[end:],
                operands=re.findall(r"%[\w.\-]+", inside),
                index=int(inside) if head[4] == "parameter" and inside.isdigit() else None)


def parse_hlo(text: str) -> Dict[str, List[dict]]:
    """Computation name -> its instructions, from the text of a compiled HLO module.

    **Arguments:**

    - `text`: `compiled.as_text()`.

    **Returns:**

    A dict; each instruction is `{name, type, op, operands, attrs, root, index}` (`index`: a
    parameter's number, else None).
    """
    return {name: [i for i in map(_instruction, body.splitlines()) if i]
            for name, body in _COMPUTATION.findall(text)}


def _fused_access(fused: List[dict]) -> Tuple[Dict[int, int], Dict[int, int]]:
    """In a fused computation: parameter number -> bytes read where the parameter is only
    sliced, and parameter number -> bytes of the update where an output writes into it in place."""
    by_name = {i["name"]: i for i in fused}
    params = {i["name"]: i["index"] for i in fused if i["op"] == "parameter"}
    users: Dict[str, List[dict]] = {}
    for i in fused:
        for o in i["operands"]:
            users.setdefault(o, []).append(i)
    sliced = {}
    for name, index in params.items():
        uses = users.get(name, [])
        if uses and all(u["op"] in ("dynamic-slice", "slice") and u["operands"][0] == name for u in uses):
            sliced[index] = sum(shape_bytes(u["type"]) for u in uses)
    root = next(i for i in fused if i["root"])
    in_place = {}
    for out in ([by_name[o] for o in root["operands"]] if root["op"] == "tuple" else [root]):
        while out["op"] == "bitcast":
            out = by_name[out["operands"][0]]
        if out["op"] == "dynamic-update-slice" and out["operands"][0] in params:
            in_place[params[out["operands"][0]]] = shape_bytes(by_name[out["operands"][1]]["type"])
    return sliced, in_place


def _access(i: dict, shapes: Dict[str, str], computations: Dict[str, List[dict]]
            ) -> Tuple[List[Tuple[str, int]], int]:
    """((operand, bytes read) per operand, bytes written) of one top-level instruction."""
    full = [shape_bytes(shapes.get(o, "")) for o in i["operands"]]
    reads, written = list(full), shape_bytes(i["type"])
    if i["op"] in ("dynamic-slice", "slice"):
        reads[0] = written
    elif i["op"] == "dynamic-update-slice":
        reads[0], written = 0, full[1]
    elif i["op"] == "fusion":
        called = re.search(r"calls=(%[\w.\-]+)", i["attrs"])
        sliced, in_place = _fused_access(computations[called[1]]) if called and called[1] in computations \
            else ({}, {})
        for k, nbytes in sliced.items():
            reads[k] = nbytes
        for k, nbytes in in_place.items():   # the output aliases operand k: only the update moves
            reads[k], written = 0, written - full[k] + nbytes
    return list(zip(i["operands"], reads)), written


def _body_bytes(body: List[dict], computations: Dict[str, List[dict]], unit_bytes: Optional[int]) -> dict:
    """Bytes read and written by the top-level instructions of one loop body."""
    shapes = {i["name"]: i["type"] for i in body}
    read = written = copies = 0
    by_op: Dict[str, int] = {}
    big_read, big_written = set(), set()
    for i in body:
        if i["op"] in _FREE:
            continue
        reads, out = _access(i, shapes, computations)
        op = "dot" if i["op"] == "fusion" and "kind=kCustom" in i["attrs"] else i["op"]
        moved = sum(b for _, b in reads) + out
        read, written, copies = read + moved - out, written + out, copies + (i["op"] == "copy")
        by_op[op] = by_op.get(op, 0) + moved
        if unit_bytes:
            big_read |= {o for o, b in reads if b >= unit_bytes / 2}
            big_written |= {i["name"]} if out >= unit_bytes / 2 else set()
    row = dict(read_bytes=read, written_bytes=written, copies=copies, by_opcode=by_op)
    if unit_bytes:
        row.update(passes=(read + written) / unit_bytes, unit_buffers_read=len(big_read),
                   unit_buffers_written=len(big_written))
    return row


def hlo_loop_bytes(text: str, unit_bytes: Optional[float] = None, every_loop: bool = False) -> dict:
    """`loop_body_bytes` for HLO text already compiled (`compiled.as_text()`).

    **Arguments:**

    - `text`: the optimised HLO module as text.
    - `unit_bytes`, `every_loop`: as for `loop_body_bytes`.

    **Returns:**

    As `loop_body_bytes`.

    **Raises:**

    `ValueError` when the module has no while loop.
    """
    computations = parse_hlo(text)
    bodies = sorted({m for c in computations.values() for i in c if i["op"] == "while"
                     for m in re.findall(r"body=(%[\w.\-]+)", i["attrs"])})
    if not bodies:
        raise ValueError("the compiled program has no while loop")
    rows = {b: _body_bytes(computations[b], computations, unit_bytes) for b in bodies}
    if not every_loop:
        body = max(rows, key=lambda b: rows[b]["read_bytes"] + rows[b]["written_bytes"])
        return dict(body=body, loops=1, **rows[body])
    total = dict(body=",".join(bodies), loops=len(bodies), by_opcode={})
    for row in rows.values():
        for key, value in row.items():
            if key == "by_opcode":
                for op, nbytes in value.items():
                    total["by_opcode"][op] = total["by_opcode"].get(op, 0) + nbytes
            else:
                total[key] = total.get(key, 0) + value
    return total


def loop_body_bytes(fn: Callable, args: Sequence, unit_bytes: Optional[float] = None,
                    every_loop: bool = False) -> dict:
    """Bytes one step of `fn`'s time loop reads and writes, from XLA's optimised HLO.

    The loop is the while-loop body (of all in the module) that moves the most bytes; for a
    `lax.scan` over time one iteration is one step, so the result does not depend on T.

    **Arguments:**

    - `fn`: the function to jit (it should contain a `lax.scan` / `while_loop`).
    - `args`: its arguments (arrays or `jax.ShapeDtypeStruct`s).
    - `unit_bytes`: optional size of one reference array (e.g. B·n·(n+m)·4, one float32 per
      synapse and example): adds `passes` and the counts of such arrays touched.
    - `every_loop`: sum over all while-loop bodies instead (BPTT: the forward scan and the
      backward scan each run once per step).

    **Returns:**

    `{"body", "loops", "read_bytes", "written_bytes", "copies", "by_opcode"}` (`by_opcode`:
    opcode -> bytes moved; XLA:CPU's custom dot fusions count as `dot`), plus with
    `unit_bytes` `"passes"` = (read + written) / unit_bytes and `"unit_buffers_read"`,
    `"unit_buffers_written"`: distinct arrays of at least unit_bytes / 2 bytes read / written.

    **Raises:**

    `ValueError` when the compiled program has no while loop.
    """
    return hlo_loop_bytes(jax.jit(fn).lower(*args).compile().as_text(), unit_bytes, every_loop)


def streaming_bandwidth(nbytes: float = 200e6, calls: int = 5) -> float:
    """The machine's streaming memory bandwidth as jitted JAX code sees it.

    Times an in-place axpy `y = a·x + y` on float32 arrays of `nbytes` each (`y` donated, so
    no copy): one call reads x and y and writes y, 3·nbytes moved.

    **Arguments:**

    - `nbytes`: size of each array (well above the last-level cache).
    - `calls`: timed calls after a warm-up; the fastest is used.

    **Returns:**

    Bytes per second.
    """
    size = int(nbytes) // 4
    axpy = jax.jit(lambda a, x, y: a * x + y, donate_argnums=2)
    x, y = jnp.ones(size, jnp.float32), jnp.zeros(size, jnp.float32)
    a = jnp.float32(1e-3)
    y = jax.block_until_ready(axpy(a, x, y))
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        y = jax.block_until_ready(axpy(a, x, y))
        best = min(best, time.perf_counter() - t0)
    return 3 * size * 4 / best
