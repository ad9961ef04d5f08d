"""The pipeline's alerts as code: Prefect automations from `alerts.yaml`, each notifying
through a block the user configures (Slack, PagerDuty, a custom webhook, ...).

`apply` creates or updates them by name, so running it again changes nothing; `render`
writes them with the block's id filled in, for `prefect automation create --from-file`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from img2img.pipeline.topology import PoolRole

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

DEFINITIONS = Path(__file__).with_name("alerts.yaml")
PIPELINE_FLOW = "img2img-pipeline"


def definitions(
    pool: str, block_document_id: str, flow: str = PIPELINE_FLOW
) -> list[dict[str, Any]]:
    """The automations of `alerts.yaml` for this pool, notifying through the block."""
    import yaml

    raw = yaml.safe_load(DEFINITIONS.read_text(encoding="utf-8"))["automations"]
    fill = {"POOL": pool, "FLOW": flow, "BLOCK_DOCUMENT_ID": block_document_id}

    def sub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v) for v in value]
        return fill.get(value, value) if isinstance(value, str) else value

    return [sub(a) for a in raw]  # sub builds new dicts and lists


def pipeline_definitions(roles: Sequence[PoolRole], block_document_id: str) -> list[dict[str, Any]]:
    """The automations for every pool of the pipeline: one set for a single pool; with a
    pool per stage, each alert about a pool or its flow once per pool (named for it), the
    others (the dead-letter queue's) once."""
    if len(roles) == 1:
        return definitions(roles[0].pool, block_document_id, roles[0].flow)
    one = definitions("pool-a", block_document_id, "flow-a")
    other = definitions("pool-b", block_document_id, "flow-b")
    anywhere = {a["name"] for a, b in zip(one, other, strict=True) if a == b}
    found: list[dict[str, Any]] = []
    for index, role in enumerate(roles):
        for automation in definitions(role.pool, block_document_id, role.flow):
            if automation["name"] not in anywhere:
                found.append({**automation, "name": f"{automation['name']} ({role.pool})"})
            elif index == 0:
                found.append(automation)
    return found


def block_document_id(prefect: SyncPrefectClient, block: str) -> str:
    """The id of a block named `<block-type-slug>/<name>` (as `prefect block ls` shows it)."""
    slug, sep, name = block.partition("/")
    if not sep or not slug or not name:
        raise ValueError(
            f"alert block must be <block-type-slug>/<name> (e.g. slack-webhook/ops), got {block!r}"
        )
    from prefect.exceptions import ObjectNotFound

    try:
        doc = prefect.read_block_document_by_name(name=name, block_type_slug=slug)
    except ObjectNotFound:
        raise LookupError(
            f"no block {block!r}: create it in the UI (Blocks) or with `prefect block create "
            f"{slug}`, then apply the alerts again"
        ) from None
    return str(doc.id)


def apply(prefect: SyncPrefectClient, automations: list[dict[str, Any]]) -> list[str]:
    """Create each automation, or update the one of the same name; returns what was done."""
    from prefect.events.schemas.automations import AutomationCore

    done = []
    for data in automations:
        automation = AutomationCore.model_validate(data)
        existing = prefect.read_automations_by_name(automation.name)
        if existing:
            prefect.update_automation(existing[0].id, automation)
            for extra in existing[1:]:  # left by `prefect automation create` run twice
                prefect.delete_automation(extra.id)
            done.append(f"updated: {automation.name}")
        else:
            prefect.create_automation(automation)
            done.append(f"created: {automation.name}")
    return done
