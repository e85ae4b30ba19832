"""The examples run as documented against the real bridge."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sqlite3
import sys

from conftest import ROOT, run_python

EXAMPLES = ROOT / "clients" / "python" / "examples"


def test_the_cron_example_reports_its_lock_digest_and_retention(bridge, tmp_path):
    db = tmp_path / "reflexio.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE transcriptions (id INTEGER PRIMARY KEY, created_at TEXT)")
    con.execute("CREATE TABLE digests (id INTEGER PRIMARY KEY, created_at TEXT)")
    now = dt.datetime.now(dt.timezone.utc)
    for days in (1, 2, 40, 50, 60):
        con.execute("INSERT INTO transcriptions(created_at) VALUES (?)",
                    ((now - dt.timedelta(days=days)).isoformat(),))
    con.commit()
    con.close()
    script = (EXAMPLES / "daily_digest.py").read_text()
    done = run_python(script, str(db), "--spool", str(tmp_path / "spool.db"),
                      env={"REFLEXIO_BRIDGE_URL": bridge.url})
    assert done.returncode == 0, done.stderr
    m = bridge.scrape()
    assert m["reflexio_digests_total"] == 1
    assert m['reflexio_retention_operations_total{table="transcriptions"}'] == 1
    assert m['reflexio_retention_deleted_records_total{table="transcriptions"}'] == 3
    assert m["reflexio_active_locks"] == 0
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM transcriptions").fetchone() == (2,)


def test_the_fastapi_example_records_each_fact(bridge, tmp_path, monkeypatch):
    monkeypatch.setenv("REFLEXIO_BRIDGE_URL", bridge.url)
    monkeypatch.setenv("REFLEXIO_TELEMETRY_SPOOL", str(tmp_path / "spool.db"))
    spec = importlib.util.spec_from_file_location("fastapi_facts", EXAMPLES / "fastapi_facts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastapi_facts"] = module
    spec.loader.exec_module(module)
    from fastapi.testclient import TestClient

    with TestClient(module.app) as http:
        answer = http.post("/transcriptions", json={"id": "t1", "facts": [
            {"text": "a", "hallucinated": False, "atomic": True, "citation_coverage": 0.97,
             "cove_confidence": 0.9, "cove_rounds": 2},
            {"text": "b", "hallucinated": True, "atomic": True, "citation_coverage": 0.4},
            {"text": "c", "citation_coverage": 1.7},
        ]})
        assert answer.json() == {"facts": 3, "recorded": 2}
        assert module.telemetry.flush(20)
    m = bridge.scrape()
    assert m["reflexio_transcriptions_total"] == 1
    assert m["reflexio_facts_total"] == 2
    assert m["reflexio_hallucinated_facts_total"] == 1
    assert m["reflexio_cove_enabled"] == 1
    del sys.modules["fastapi_facts"]
