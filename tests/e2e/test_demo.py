import subprocess
import sys
from pathlib import Path


def test_demo_shows_rotation_revocation_and_recovery_and_ends_cleanly(tmp_path: Path) -> None:
    # The console script as `make demo` runs it, from a folder that is not the repository: the
    # CRD comes with the testbed distribution, not from the working directory.
    demo = Path(sys.executable).parent / "lucidgrant-demo"
    result = subprocess.run(
        [str(demo), "--duration", "24", "--access-ttl", "6"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    access = {line.split("access ")[1].split()[0] for line in lines if "access " in line}
    assert len(access - {"--------"}) >= 3, "the access token rotated"
    reauth_at = next(i for i, line in enumerate(lines) if "Reauth=True  (InvalidGrant)" in line)
    assert any("Ready=True" in line for line in lines[reauth_at:]), (
        "recovered after re-authorization"
    )
    assert "stopped cleanly (exit 0)" in result.stdout
