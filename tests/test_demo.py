"""``pybpfasm demo`` runs by itself, shows the table and leaves nothing behind (also on Ctrl-C)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _leftovers(prefix: str) -> list[str]:
    from loader.pins import list_instances
    from pybpfasm import netlab

    found = [n for n in netlab.list_netns(prefix)]
    found += [i for i in list_instances() if i.startswith(prefix)]
    with netlab.iproute() as ipr:
        found += [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()
                  if (link.get_attr("IFLA_IFNAME") or "").startswith(prefix)]
    return found


def _prefix(output: str) -> str:
    match = re.search(r"building lab (pybdemo[0-9a-f]+)", output)
    assert match, output
    return match.group(1)


def test_demo_runs_to_the_end_and_cleans_up(kernel):
    out = subprocess.run([sys.executable, "-m", "pybpfasm.cli.main", "demo", "--duration", "6", "--receivers", "2",
                          "--groups", "2", "--rate", "40"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "239.1.1.1" in text and "receiver" in text and "join 239.1.1." in text
    final = text[text.rindex("pybpfasm demo:"):]
    rows = [line for line in final.splitlines() if re.match(r"r\d ", line)]
    assert len(rows) == 2
    totals = [int(n) for row in rows for n in re.findall(r"(\d+)\s+\d+/s", row)]
    assert sum(totals) > 0  # traffic was forwarded to joined receivers
    assert _leftovers(_prefix(text)) == []


def test_demo_interrupted_cleans_up(kernel):
    proc = subprocess.Popen([sys.executable, "-m", "pybpfasm.cli.main", "demo", "--duration", "60",
                             "--receivers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("pybpfasm demo:"):
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    text = "".join(seen) + rest
    assert proc.returncode == 130, text
    assert "removed" in text
    assert _leftovers(_prefix(text)) == []
