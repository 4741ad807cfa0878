"""Errors a user can cause. The CLIs print them as one line and exit non-zero."""


class BDHError(Exception):
    """Base class: bad input, not a bug."""


class CheckpointError(BDHError):
    pass


class ConfigError(BDHError):
    pass


class TextError(BDHError):
    pass


class NetworkFormatError(BDHError):
    pass


class BackendUnavailable(BDHError):
    pass


class ProfileError(BDHError):
    pass
