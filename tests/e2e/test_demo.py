import subprocess
import sys
from pathlib import Path


def test_demo_shows_rotation_revocation_and_recovery_and_ends_cleanly(tmp_path: Path) -> None:
    # The console script as `make demo` runs it, from a folder that is not the repository: the
    # CRD comes with the testbed distribution, not from the working directory.
    demo = Path(sys.executable).parent / "lucidgrant-demo"
    result = subprocess.run(
        [str(demo), "--duration", "24", "--access-ttl", "5"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "kubectl get lg" in out and "export KUBECONFIG=" in out, "what to try while it runs"
    lines = out.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["TIME", "ACCESS"])
    table = [
        line for line in lines[lines.index(header) + 1 :] if line.endswith(tuple("0123456789"))
    ]
    rows = [line.split() for line in table]
    # Columns stay put whatever the reasons: REAUTH is always under its header.
    reauth_col = header.index("REAUTH")
    assert {line[reauth_col:].split()[0] for line in table} <= {"True", "False", "-"}
    access = {r[1] for r in rows} - {"--------"}
    assert len(access) >= 3, "the access token rotated"
    flagged = next(i for i, r in enumerate(rows) if r[5:7] == ["True", "InvalidGrant"])
    assert any(r[3] == "True" and r[5] == "False" for r in rows[flagged:]), (
        "recovered after re-authorization"
    )
    assert "stopped cleanly (exit 0)" in out
    assert "Next:" in out
