"""Editing a saved .bdhsnn network file by hand, for the tests of the distrustful loader."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np


def rewrite(src, dst, manifest_edit=None, replace=None, extra=None, drop=None):
    """A copy of a .bdhsnn with its manifest edited in place (``manifest_edit(m)``), members
    replaced (raw bytes, or an array saved as .npy), added (``extra``) or left out (``drop``)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name == drop:
                continue
            data = zin.read(name)
            if name == "manifest.json" and manifest_edit:
                m = json.loads(data)
                manifest_edit(m)
                data = json.dumps(m).encode()
            new = (replace or {}).get(name, data)
            if isinstance(new, np.ndarray):
                buf = io.BytesIO()
                np.save(buf, new)
                new = buf.getvalue()
            zout.writestr(name, new)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
    return dst
