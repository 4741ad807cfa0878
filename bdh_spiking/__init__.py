"""bdh-spiking: a trained dense BDH language model as an explicit spiking network.

Public API (small and stable)::

    import bdh_spiking as bs
    model = bs.load_model()                      # shipped default; or a path (own or official format)
    net = bs.convert(model, gating="gain")       # -> bs.SpikingNetwork
    out = bs.simulate(net, ids, backend="reference", timesteps=8, coding="rate")
    rep = bs.compare(model, net, ids, backends=["reference"])
"""

__version__ = "0.1.0"

__all__ = ["load_model", "convert", "SpikingNetwork", "simulate", "compare", "__version__"]


def __getattr__(name):
    # Imported lazily so `import bdh_spiking` stays light and a CLI's --help stays fast.
    if name == "load_model":
        from .checkpoint import load_model

        return load_model
    if name == "convert":
        from .conversion import convert

        return convert
    if name == "SpikingNetwork":
        from .network import SpikingNetwork

        return SpikingNetwork
    if name == "simulate":
        from .backends import simulate

        return simulate
    if name == "compare":
        from .report import compare

        return compare
    raise AttributeError(f"module 'bdh_spiking' has no attribute {name!r}")
