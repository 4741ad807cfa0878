"""Can Lava's own LearningDense carry BDH's plastic synapses? A probe, run in Lava's CPU simulator.

    python benchmarks/lava_learning_dense_probe.py [--tokens 6] [--D 4] [--N 6] [--seed 0]

The fixed-frame rule of one head (docs/spiking-semantics.md, semantics/plasticity.py), per token t:

    u_t = S q_t                       read (before the write), q_t = the rotated x payload (signed)
    S  <- lam_t * S + x_t (x) q_t     write: x_t the graded residual input (signed), lam_t the
                                      decay/reset switch of the token (0 resets, 1 keeps)

Tried with lava-nc's LearningDense (one learning epoch per step) and a three-factor rule
(Loihi3FLearningRule): the pre trace x1 is overwritten by each graded pre spike's payload / 2
(GradedSpikeCfg.OVERWRITE), the post traces y1 and y2 are set by graded third-factor inputs
(s_in_y1 = x_t, s_in_y2 = 1 - lam_t), and

    dw = 2^1 * x0 * x1 * y1  -  u0 * y2 * w

(x0: only synapses whose pre neuron sent a spike this epoch, so a silent neuron's stale trace is
not written). The read is LearningDense's own a_out = W s_in (one step late, before the epoch's
weight update). The probe drives it with random signed q_t (with zeros), x_t and switches, and
compares the reads and the final weights with the rule computed directly, in floating point and
in Lava's bit-accurate (fixed_pt) model. It prints what matched; docs/backends.md says what follows.
"""

from __future__ import annotations

import argparse

import numpy as np


def reference(q, x, lam):
    """Reads u_t and the final S of the rule, directly (q: (n, N), x: (n, D), lam: (n,))."""
    S = np.zeros((x.shape[1], q.shape[1]))
    reads = []
    for t in range(len(q)):
        reads.append(S @ q[t])
        S = lam[t] * S + np.outer(x[t], q[t])
    return np.array(reads), S


def run_lava(q, x, lam, tag: str, tau: float):
    """The same inputs through LearningDense; returns (reads (n, D), final weights (D, N))."""
    from lava.magma.core.learning.constants import GradedSpikeCfg
    from lava.magma.core.learning.learning_rule import Loihi3FLearningRule
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import LearningDense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    n, N = q.shape
    D = x.shape[1]
    # tau = 0 ("no decay") leaves Lava 0.10's float trace history NaN: a huge tau instead (the traces
    # decay by exp(-1/tau) within the one-step epoch); Loihi3FLearningRule fixes the y taus at 2^16-1
    rule = Loihi3FLearningRule(dw="2^1 * x0 * x1 * y1 - u0 * y2 * w", x1_tau=tau, t_epoch=1)
    rule.y1_tau = rule.y2_tau = rule.y3_tau = tau
    syn = LearningDense(weights=np.zeros((D, N)), learning_rule=rule, num_message_bits=24,
                        graded_spike_cfg=GradedSpikeCfg.OVERWRITE, name="plastic")
    pad = np.zeros((1, 1))  # one extra step to flush the last read out of the Dense delay
    sources = {"s_in": q.T, "s_in_y1": x.T, "s_in_y2": np.broadcast_to(1.0 - lam, (D, n)),
               "s_in_y3": np.zeros((D, n)), "s_in_bap": np.zeros((D, n))}
    procs = []
    for port, data in sources.items():
        data = np.concatenate([data, np.zeros((data.shape[0], 1)) * pad], axis=1)
        src = Source(data=data)
        src.s_out.connect(getattr(syn, port))
        procs.append(src)
    sink = Sink(shape=(D,), buffer=n + 1)
    syn.a_out.connect(sink.a_in)
    syn.run(condition=RunSteps(num_steps=n + 1), run_cfg=Loihi2SimCfg(select_tag=tag))
    try:
        reads = sink.data.get().T[1:]  # a_out at step t+1 is the read of step t's input
        weights = syn.weights.get()
    finally:
        syn.stop()
    return reads, weights


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=6)
    p.add_argument("--D", type=int, default=4)
    p.add_argument("--N", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fixed-scale", type=float, default=16.0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    q = rng.normal(size=(args.tokens, args.N)) * (rng.random((args.tokens, args.N)) < 0.6)  # signed, with zeros
    x = rng.normal(size=(args.tokens, args.D))
    lam = np.where(np.arange(args.tokens) == args.tokens // 2, 0.0, 0.9)  # decay, one reset
    # fixed_pt gets integers: payloads and residual values scaled by --fixed-scale and rounded, and
    # switches that are 0 or 1 only (a 7-bit third factor cannot hold a decay factor like 0.9)
    qi, xi, lami = np.round(q * args.fixed_scale), np.round(x * args.fixed_scale), (lam > 0).astype(float)
    print(f"rule: read u = S q, then S <- lam S + x (x) q; D={args.D}, N={args.N}, {args.tokens} tokens")
    for tag, (qq, xx, ll) in (("floating_pt", (q, x, lam)), ("fixed_pt", (qi, xi, lami))):
        want_reads, want_S = reference(qq, xx, ll)
        try:
            reads, S = run_lava(qq, xx, ll, tag, 1e12 if tag == "floating_pt" else 2 ** 16 - 1)
        except Exception as err:  # a Lava model that cannot run this rule is a finding, not a crash
            print(f"{tag:12s} LearningDense did not run: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
            continue
        read_err = np.abs(reads - want_reads).max() / max(np.abs(want_reads).max(), 1e-12)
        s_err = np.abs(S - want_S).max() / np.abs(want_S).max()
        print(f"{tag:12s} reads: max relative error {read_err:.2e}; final weights: max relative error {s_err:.2e}")


if __name__ == "__main__":
    main()
