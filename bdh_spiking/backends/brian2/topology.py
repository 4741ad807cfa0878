"""The network's wiring in Brian2, shared by both modes: synapse indices, folded weights in
synapse order, the four projections, the live arrays the graded stage reads and writes, and the
run of a network whose graded stage is a schedule of steps."""

from __future__ import annotations

import gc

import numpy as np


def flat_broadcast(a: np.ndarray, shape: tuple, dtype=None) -> np.ndarray:
    """a broadcast to shape, flattened: one allocation of the final size, no index grids."""
    return np.broadcast_to(a if dtype is None else a.astype(dtype), shape).reshape(-1)


def connectivity(L: int, B: int, H: int, D: int, N: int) -> dict:
    """Flat (pre, post) int32 indices of the four projections of L layers x B batch rows.

    Neurons are numbered row-major: residual units (l, b, d), x/y neurons (l, b, h, n), readout
    units (l, b, h, d). E, E_v and hebb have synapse order (l, b, h, d, n), so a plastic state
    read back views as (L, B, H, D, N); the decoder D has order (l, b, h, n, d). An official-size
    network has 50 M synapses per projection: only the final index arrays are allocated."""
    l, b, h, d, n = (np.arange(k).reshape([k if i == j else 1 for j in range(5)]) for i, k in enumerate((L, B, H, D, N)))
    lb = l * B + b
    shape = (L, B, H, D, N)
    res_i = flat_broadcast(lb * D + d, shape, np.int32)
    neu_i = flat_broadcast((lb * H + h) * N + n, shape, np.int32)
    att_i = flat_broadcast((lb * H + h) * D + d, shape, np.int32)
    # decoder order (l, b, h, n, d): swap the last two axes of the index expressions
    dec_pre = flat_broadcast(((lb * H + h) * N + n).swapaxes(3, 4), (L, B, H, N, D), np.int32)
    dec_post = flat_broadcast((lb * D + d).swapaxes(3, 4), (L, B, H, N, D), np.int32)
    return {"E": (res_i, neu_i), "E_v": (att_i, neu_i), "hebb": (neu_i, att_i), "D": (dec_pre, dec_post)}


def by_presynaptic(a: np.ndarray, L: int, B: int, H: int, D: int, N: int) -> np.ndarray:
    """A plastic projection's array in synapse order (l, b, h, d, n) reordered to (l, b, h, n, d)."""
    return np.ascontiguousarray(a.reshape(L, B, H, D, N).swapaxes(3, 4)).reshape(-1)


def projection_weights(w: dict, L: int, B: int, H: int, D: int, N: int) -> dict:
    """Folded weights in the synapse orders of connectivity()."""
    return {"E": flat_broadcast(w["W_x"].numpy()[:, None], (L, B, H, D, N)),
            "E_v": flat_broadcast(w["W_y"].numpy()[:, None], (L, B, H, D, N)),
            "D": flat_broadcast(w["decoder"].numpy().reshape(1, 1, H, N, D), (L, B, H, N, D))}


def build_projections(groups: dict, w: dict, dims: tuple, clock, namespace: dict, prefix: str,
                      hebb_write: str) -> dict:
    """The four projections of both modes, connected and weighted: E (res -> x, custom event
    'drive'), E_v (attn -> y, 'vdrive'), the plastic hebb (x -> attn: pathways scale, read and
    write, the write rule given by the mode) and the decoder D (y -> res, 'emit'; weight
    decoder[h*N + n, d])."""
    import brian2 as b2

    res, attn, xg, yg = groups["res"], groups["attn"], groups["x"], groups["y"]
    common = dict(clock=clock, namespace=namespace)
    syn = {
        "E": b2.Synapses(res, xg, "w : 1 (constant)", on_pre={"drive": "z_post += w * x_pre"},
                         on_event={"drive": "drive"}, name=prefix + "E", **common),
        "E_v": b2.Synapses(attn, yg, "w : 1 (constant)", on_pre={"vdrive": "z_post += w * un_pre"},
                           on_event={"vdrive": "vdrive"}, name=prefix + "E_v", **common),
        "hebb": b2.Synapses(xg, attn, "S : 1\nkeep : 1 (shared)",
                            on_pre={"scale": "S = S * keep", "read": "u_post += S * q_pre", "write": hebb_write},
                            on_event={"scale": "scale", "read": "read", "write": "write"}, name=prefix + "hebb",
                            **common),
        "D": b2.Synapses(yg, res, "w : 1 (constant)", on_pre={"emit": "m_post += w * g_pre"},
                         on_event={"emit": "emit"}, name=prefix + "D", **common),
    }
    conn, weights = connectivity(*dims), projection_weights(w, *dims)
    for key, s in syn.items():
        s.connect(i=conn[key][0], j=conn[key][1])
        if key in weights:
            s.w = weights[key]
    return syn


def live_array(obj, var: str, shape=None) -> np.ndarray:
    """The live storage array of a Brian2 variable (writes go straight into the simulation)."""
    a = obj.variables[var].get_value()
    return a.reshape(shape) if shape is not None else a


def live_views(obj, names, shape) -> dict:
    """name -> live array (shape) of each named variable of a group."""
    return {name: live_array(obj, name, shape) for name in names}


def free_previous_networks() -> None:
    """A previous run's Brian2 objects are reference cycles: free them before building the next
    network (at the official size each holds ~8 GB)."""
    gc.collect()


class StepDriver:
    """The graded stage as a Brian2 NetworkOperation: calls on_step(k) at the start of timestep k."""

    def __init__(self, on_step):
        self.on_step = on_step
        self.steps_done = 0

    def tick(self):
        k = self.steps_done
        self.steps_done = k + 1
        self.on_step(k)


def run_scheduled(objects: list, clock, n_steps: int, on_step, name: str) -> None:
    """Runs the network for n_steps timesteps with on_step(k) at the 'start' slot of each."""
    import brian2 as b2

    driver = StepDriver(on_step)
    op = b2.NetworkOperation(driver.tick, clock=clock, when="start", name=name)
    b2.Network(*objects, op).run(n_steps * clock.dt, namespace={})
    if driver.steps_done != n_steps:
        raise RuntimeError(f"brian2 ran {driver.steps_done} timesteps, the schedule has {n_steps}")


def progress_bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from ...progress import bar as tqdm

    return tqdm(total=total, desc=desc, leave=False)
