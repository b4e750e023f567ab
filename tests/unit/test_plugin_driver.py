"""The plugin path: a driver shipped in another distribution is found by its URL scheme."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

DRIVER = '''
from backends.memory import MemoryCoordinator


class ThirdPartyCoordinator(MemoryCoordinator):
    """A third party's driver: here it reuses the memory driver's semantics."""
'''


def test_third_party_driver_is_loaded_by_scheme(tmp_path: Path) -> None:
    (tmp_path / "thirdparty_driver.py").write_text(DRIVER)
    dist = tmp_path / "thirdparty_driver-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-driver\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[coordination.backends]\nthirdparty = thirdparty_driver:ThirdPartyCoordinator\n"
    )
    script = textwrap.dedent("""
        import coordination
        assert "thirdparty" in coordination.installed_backends()
        with coordination.connect("thirdparty://plugin-test", member_id="a") as coord:
            print(type(coord).__name__, coord.election("e").candidates())
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, check=False,
                         text=True, timeout=60, env={"PYTHONPATH": str(tmp_path), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ThirdPartyCoordinator []")
