"""First-run check and the Hugging Face token entered in the app (stored owner-only, never returned)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field, field_validator

from backend.deps import CatalogDep, EngineDep, SettingsDep, StatsDep
from backend.secrets_store import HF_TOKEN, delete_secret, write_secret
from backend.setup_checks import Check, check_hf_token, run_checks

router = APIRouter(prefix="/api/setup", tags=["setup"])


class SetupCheck(BaseModel):
    """One part of the machine's set-up: pass, warn (works, with limits) or fail, and the fix."""

    id: str = Field(description="engine, gpu, hf_token, cache:<kind>, private_files")
    title: str
    ok: bool
    level: Literal["pass", "warn", "fail"]
    detail: str
    fix: str | None = Field(None, description="What to do (a command where there is one); null when ok")

    @classmethod
    def of(cls, c: Check) -> "SetupCheck":
        return cls(id=c.id, title=c.title, ok=c.ok, level=c.level, detail=c.detail, fix=c.fix)


class HfTokenIn(BaseModel):
    """A Hugging Face access token (https://huggingface.co/settings/tokens)."""

    token: str = Field(min_length=1, max_length=512)

    @field_validator("token")
    @classmethod
    def _one_word(cls, v: str) -> str:
        # The message never repeats the value: validation errors are shown and may be logged.
        v = v.strip()
        if not v or any(ch.isspace() or not ch.isprintable() for ch in v):
            raise ValueError("a token is one word of printable characters")
        return v


@router.get("/checks", operation_id="setupChecks",
            summary="First-run check: engine, GPU runtime, Hugging Face token, model caches, private files")
def checks(settings: SettingsDep, engine: EngineDep, stats: StatsDep, catalog: CatalogDep) -> list[SetupCheck]:
    snap = stats.latest() if stats is not None else None
    kinds = {c.kind for r in catalog.recipes.values() for c in r.caches}
    return [SetupCheck.of(c) for c in run_checks(settings, engine.status(), snap.gpu_status if snap else None, kinds)]


@router.put("/hf-token", operation_id="setHfToken",
            summary="Store the Hugging Face token (owner-only file; never returned) for launches that use HF_TOKEN")
def set_hf_token(body: HfTokenIn, settings: SettingsDep) -> SetupCheck:
    write_secret(settings.home, HF_TOKEN, body.token)
    return SetupCheck.of(check_hf_token(settings.home))


@router.delete("/hf-token", status_code=204, operation_id="deleteHfToken",
               summary="Forget the stored Hugging Face token")
def delete_hf_token(settings: SettingsDep) -> Response:
    delete_secret(settings.home, HF_TOKEN)
    return Response(status_code=204)
