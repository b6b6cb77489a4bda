"""User-facing errors: the CLI prints their message (no traceback) and exits with status 2."""


class EselakeError(Exception):
    """Bad input or a state the user can fix; the message says what and how."""


class LakeError(EselakeError):
    """The lake folder is unusable (a file, not writable, corrupt)."""


class InputError(EselakeError):
    """An input file (FITS, catalogue, UVH5, source list) cannot be used."""
