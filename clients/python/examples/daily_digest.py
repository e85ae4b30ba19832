"""A cron job reporting its lock, its digest and its retention run.

    REFLEXIO_BRIDGE_URL=http://127.0.0.1:8000 python daily_digest.py /srv/reflexio/reflexio.db

While the job runs, the bridge shows the lock `daily_digest` held by this process (and stale if
the process dies without releasing it). Then it deletes transcriptions older than the retention
period and reports the run, failed or not. The spool keeps the events if the bridge is down; the
next run (or any process using the same spool) delivers them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3

from reflexio_telemetry import Client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", help="the application's SQLite database")
    parser.add_argument("--keep-days", type=int, default=30)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--spool", default=None, help="a local spool file (recommended)")
    args = parser.parse_args()

    with Client(spool_path=args.spool) as telemetry:
        with telemetry.lock("daily_digest"):
            con = sqlite3.connect(args.database)
            cutoff = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=args.keep_days)).isoformat()
            # ... build and store the digest of the last day here ...
            con.execute("INSERT INTO digests(created_at) VALUES (?)",
                        (dt.datetime.now(dt.timezone.utc).isoformat(),))
            con.commit()
            telemetry.digest()
            try:
                with con:
                    if args.dry_run:
                        (deleted,) = con.execute(
                            "SELECT count(*) FROM transcriptions WHERE created_at < ?", (cutoff,)
                        ).fetchone()
                    else:
                        deleted = con.execute(
                            "DELETE FROM transcriptions WHERE created_at < ?", (cutoff,)
                        ).rowcount
            except sqlite3.Error as e:
                telemetry.retention("transcriptions", 0, dry_run=args.dry_run, error=str(e))
                return 1
            telemetry.retention("transcriptions", deleted, dry_run=args.dry_run)
        # Leaving the Client block delivers everything (or leaves it in the spool).
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
