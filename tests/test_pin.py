"""Pin helpers: clear errors for paths that cannot work, directories created on bpffs."""

from __future__ import annotations

import os
import shutil

import pytest

from pybpfasm import pin
from pybpfasm.layout import u32
from pybpfasm.maps import ArrayMap, Map


def test_bad_names_rejected_without_kernel():
    with pytest.raises(pin.PinError, match="may not contain '.'"):
        pin.check_pin_path("/sys/fs/bpf/a.b")


def test_pin_creates_dirs_and_replaces(kernel, unique_name):
    base = f"/sys/fs/bpf/{unique_name}"
    try:
        with ArrayMap(value=u32, max_entries=1) as a, ArrayMap(value=u32, max_entries=1) as b:
            path = pin.pin(a, f"{base}/sub/m")
            assert pin.pinned_kind(path) == "map"
            with pytest.raises(FileExistsError):
                pin.pin(b, path)
            pin.pin(b, path, replace=True)
            with Map.from_pinned(path) as again:
                assert again.id == b.id
            assert pin.unpin(path) and not pin.unpin(path)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_pin_outside_bpffs_is_explained(kernel, tmp_path):
    with ArrayMap(value=u32, max_entries=1) as a:
        with pytest.raises(pin.PinError, match="is not on a bpffs mount"):
            pin.pin(a, os.path.join(tmp_path, "m"))
