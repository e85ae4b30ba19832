"""Recording a fact pipeline's verdicts in a FastAPI handler.

The pipeline posts each transcription's verified facts here; the handler records one event per
fact with whichever verdicts it has. Recording never waits for the bridge: events are spooled to
a local SQLite file and sent in the background, so the handler's latency does not depend on the
bridge, and a bridge outage or a restart of this service loses nothing.

    REFLEXIO_BRIDGE_URL=http://127.0.0.1:8000 REFLEXIO_TELEMETRY_SPOOL=/var/lib/reflexio/spool.db \\
        uvicorn fastapi_facts:app --workers 4

With several workers each forked process gets its own sender; they share the spool safely.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from typing import List, Optional

from fastapi import FastAPI
from pydantic import BaseModel

from reflexio_telemetry import Client, Cove, InvalidEvent

log = logging.getLogger("reflexio.facts")

telemetry = Client(spool_path=os.environ.get("REFLEXIO_TELEMETRY_SPOOL"))


class VerifiedFact(BaseModel):
    text: str
    hallucinated: Optional[bool] = None
    atomic: Optional[bool] = None
    citation_coverage: Optional[float] = None
    cove_confidence: Optional[float] = None
    cove_rounds: Optional[int] = None


class Transcription(BaseModel):
    id: str
    facts: List[VerifiedFact]


@asynccontextmanager
async def lifespan(app: FastAPI):
    telemetry.cove_config(enabled=True, threshold=float(os.environ.get("COVE_THRESHOLD", "0.7")))
    yield
    telemetry.close(timeout=5)


app = FastAPI(lifespan=lifespan)


@app.post("/transcriptions")
def transcription_done(transcription: Transcription) -> dict:
    telemetry.transcription()
    recorded = 0
    for fact in transcription.facts:
        cove = None
        if fact.cove_confidence is not None and fact.cove_rounds is not None:
            cove = Cove(fact.cove_confidence, fact.cove_rounds)
        try:
            telemetry.fact(
                hallucinated=fact.hallucinated,
                atomic=fact.atomic,
                citation_coverage=fact.citation_coverage,
                cove=cove,
            )
            recorded += 1
        except InvalidEvent as e:
            # A verdict out of range is a pipeline bug: say so, but do not fail the request.
            log.warning("fact of transcription %s not recorded: %s", transcription.id, e)
    return {"facts": len(transcription.facts), "recorded": recorded}
