"""The fleet report as data: one dictionary, built by pure functions from what was read.

`build_report(facts, evaluations, benches, prometheus)` returns the document that
``llmfleet report --json`` prints and that both renderers (the text table in
`llmfleet.report`, the page in `llmfleet.report_html`) draw from. Inputs:

``facts``
    host -> its facts from Ansible's jsonfile cache (`llmfleet.report.load_fact_cache`):
    ``llmfleet_hardware`` (the gpu_facts module), ``llmfleet_tier``, ``preflight_tier``,
    ``preflight_tier_source``, ``ansible_local.blue_green`` and
    ``ansible_local.hardware_eval``.
``evaluations``
    host -> its ``llmfleet.hwevaluation/1`` document (``.cache/evaluation/<host>.json``).
    Where the fact cache holds one too (``ansible_local.hardware_eval``), the later
    ``measured_at`` wins (the file on a tie).
``benches``
    host -> its ``llmfleet.bench/2`` document (``.cache/bench/<host>.json``).
``prometheus``
    None when not asked, else what `llmfleet.report_prometheus.fetch` read:
    ``{"url", "error", "errors": {query: text}, "series": {query: [Prometheus vector
    samples]}}``; ``error`` set means Prometheus did not answer and nothing live is known.

Every figure is read defensively: a value of the wrong type is ``None``, never a crash;
what cannot be used is named in ``problems``. Units follow the inputs: MiB for memory
sizes, GiB/s for bandwidths, seconds for times, tokens per second for rates.

The document (schema ``llmfleet.report/1``)::

    schema, generated_at, inputs {facts, evaluations, benches (paths as given, or null)}
    prometheus   null (not asked) | {url, reachable, error, errors {query: text}}
    problems     [text]: inputs left out or read in part
    hosts[]      one per host, sorted by name:
      host
      tier       {name, source (pinned | detected | undecided), detected, reason}
      hardware   {source, driver_version, cuda_version, gpu_count, usable_vram_mib,
                  memory_total_mib, cpu_cores, numa_nodes, problems} | null (no facts)
      gpus[]     {index, name, uuid, pci_bus_id, mig_enabled, memory_total_mib,
                  usable_vram_mib, memory_bandwidth_gib_per_s, reason,
                  vram {total_mib, used_mib, free_mib, source: prometheus | evaluation | null},
                  pcie {gen_current, gen_max, width_current, width_max, at_max,
                        source: evaluation | facts | null, expected_gib_per_s,
                        h2d_gib_per_s, d2h_gib_per_s}}
      evaluation null | {measured_at, source (file | fact), cpu, memory_bandwidth
                  {gib_per_s, tool, test, threads, working_set_bytes, reason},
                  engine {build, model, model_bytes, decode_tokens_per_s,
                          prefill_tokens_per_s, bytes_per_token,
                          physical_limit_tokens_per_s, fraction_of_limit, fraction_note},
                  cuda_program, p2p[], verdicts[] {severity, subject, message}}
      serving    null | {active, previous, colors[] {color, active, previous, build, model,
                  model_sha256, model_size_bytes, port, args}}
      bench      null | {started_at, endpoint, model, tool, levels[] {name, mode,
                  concurrency, rate, requests, succeeded, failed, output_tokens_per_s,
                  requests_per_s, decode_tokens_per_s_per_stream, ttft_s, tpot_s, itl_s,
                  e2e_s: {n, mean, p50, p90, p99}}}
      alerts     null (Prometheus not asked or not answering) | [{alertname, severity,
                  action, labels}]
      answers    null (unknown) | whether Prometheus' last scrape of the host's engine
                  (up{job="llmfleet-engine"}) succeeded
      summary    {gpu_count, usable_vram_mib, vram_used_mib, vram_free_mib,
                  vram_free_source, memory_bandwidth_gib_per_s, decode_tokens_per_s_c1,
                  decode_c1_source, fraction_of_limit, fraction_source, active_model,
                  alerts_firing}
    fleet        {hosts, tiers[] {tier, hosts[], count, answering, vram_free_mib,
                  vram_free_unknown[]}, alerts_firing, alerts_without_host[]}

Definitions:

* decode tokens/s per stream at a bench level = 1 / mean TPOT (TPOT leaves out the first
  token, so this is decode alone); ``decode_tokens_per_s_c1`` is that figure at
  concurrency 1, else the evaluation's single-stream ``engine.decode_tokens_per_s``
  (``decode_c1_source`` says which).
* ``fraction_of_limit`` is the evaluation's (decode / physical limit, schema
  llmfleet.hwevaluation/1); when it has none and no ``fraction_note`` (which says the model
  fits in the last-level cache, where the limit means nothing), the bench's decode at
  concurrency 1 over the evaluation's ``physical_limit_tokens_per_s``.
* capacity left per tier (``fleet.tiers[]``): ``answering`` = the tier's hosts whose
  engine Prometheus scraped successfully at its last scrape (``up{job="llmfleet-engine"}
  == 1``); ``vram_free_mib`` = the sum, over those answering hosts, of the VRAM free on
  their GPUs now (``DCGM_FI_DEV_FB_FREE``; a host without GPUs adds 0); answering hosts
  without that figure are listed in ``vram_free_unknown``. Without Prometheus both are
  null: capacity is a live figure and the fact cache is not live.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

REPORT_SCHEMA = "llmfleet.report/1"
EVALUATION_SCHEMA = "llmfleet.hwevaluation/1"
BENCH_SCHEMA = "llmfleet.bench/2"

#: The tiers in the order people read them (the default table's, smallest first); a tier a
#: site names otherwise follows by name, undecided hosts last.
TIER_ORDER = ("cpu", "base", "standard", "pro", "enterprise")
UNDECIDED = "undecided"
#: The Prometheus job whose `up` says a host's engine answers (the monitoring role's).
ENGINE_JOB = "llmfleet-engine"
#: How many of a host's hardware problems the tier's reason quotes.
REASON_PROBLEMS = 3
PERCENTILE_KEYS = ("p50", "p90", "p99")


# -- defensive readers ------------------------------------------------------------------------


def number(value: Any) -> float | None:
    """A finite int or float (never a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def integer(value: Any) -> int | None:
    """An int (never a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def text(value: Any) -> str | None:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def texts(value: Any) -> list[str]:
    return [entry for entry in items(value) if isinstance(entry, str)]


def _pick(source: Mapping[str, Any], keys: Iterable[str], read: Any = number) -> dict[str, Any]:
    return {key: read(source.get(key)) for key in keys}


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _sum(values: Iterable[int | float | None]) -> float | None:
    """The sum, or None when any value is unknown."""
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


# -- tier --------------------------------------------------------------------------------------


def _gib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB"


def tier_reason(facts: Mapping[str, Any]) -> str:
    """Why the host has its tier, in one sentence, from the facts alone."""
    hardware = mapping(facts.get("llmfleet_hardware"))
    tier = text(facts.get("preflight_tier", facts.get("llmfleet_tier")))
    detected = text(facts.get("llmfleet_tier"))
    source = text(facts.get("preflight_tier_source")) or "detected"
    problems = texts(hardware.get("problems"))
    usable = number(hardware.get("usable_vram_mib"))
    gpus = [mapping(gpu) for gpu in items(hardware.get("gpus"))]
    if source == "pinned" and tier:
        return (
            f"pinned by llmfleet_tier_override; the hardware alone reaches "
            f"{detected or 'no tier (undecided)'}"
        )
    if tier is None or source == UNDECIDED:
        if problems:
            more = len(problems) - REASON_PROBLEMS
            quoted = "; ".join(problems[:REASON_PROBLEMS])
            return f"undecided: {quoted}" + (f" (and {more} more)" if more > 0 else "")
        if hardware.get("source") == "pci":
            return "undecided: GPUs seen on the PCI bus, but no driver answers (nvidia-smi)"
        if not hardware:
            return "undecided: no hardware facts in the cache (run the preflight)"
        return "undecided: the usable VRAM of some GPU is unknown"
    if tier == "cpu":
        if not gpus:
            return "no GPU found: served from the CPU"
        return (
            f"{_gib(usable or 0)} usable VRAM is below the smallest tier's class: "
            "served from the CPU"
        )
    where = f"{len(gpus)} GPU" + ("s" if len(gpus) != 1 else "")
    mig = (
        " (a GPU in MIG mode counts with its largest instance)"
        if any(gpu.get("mig_enabled") for gpu in gpus)
        else ""
    )
    vram = _gib(usable) if usable is not None else "unknown"
    return f"{vram} usable VRAM on {where}{mig} reaches the {tier} class at 90 %"


def tier_entry(facts: Mapping[str, Any] | None) -> dict[str, Any]:
    if facts is None:
        return {
            "name": None,
            "source": UNDECIDED,
            "detected": None,
            "reason": "undecided: the host is not in the fact cache (run the preflight)",
        }
    return {
        "name": text(facts.get("preflight_tier", facts.get("llmfleet_tier"))),
        # A cache from before the preflight recorded a source held detected tiers only.
        "source": text(facts.get("preflight_tier_source")) or "detected",
        "detected": text(facts.get("llmfleet_tier")),
        "reason": tier_reason(facts),
    }


def hardware_entry(facts: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    hardware = mapping(facts.get("llmfleet_hardware"))
    gpus = [mapping(gpu) for gpu in items(hardware.get("gpus"))]
    count = integer(hardware.get("gpu_count"))
    return {
        "source": text(hardware.get("source")),
        "driver_version": text(hardware.get("driver_version")),
        "cuda_version": text(hardware.get("cuda_version")),
        "gpu_count": len(gpus) if count is None else count,
        # as the text report has always named them: product name, else PCI device id
        "gpu_names": [
            (text(gpu.get("name")) or text(gpu.get("pci_device_id")) or "NVIDIA GPU")
            + (" (MIG)" if gpu.get("mig_enabled") else "")
            for gpu in gpus
        ],
        "usable_vram_mib": integer(hardware.get("usable_vram_mib")),
        "memory_total_mib": integer(hardware.get("memory_total_mib")),
        "cpu_cores": integer(hardware.get("cpu_cores")),
        "numa_nodes": integer(hardware.get("numa_nodes")),
        "problems": texts(hardware.get("problems")),
    }


# -- evaluation --------------------------------------------------------------------------------


def choose_evaluation(
    from_file: Mapping[str, Any] | None, from_fact: Any
) -> tuple[Mapping[str, Any] | None, str | None]:
    """The evaluation to report and where it came from: the later ``measured_at`` of the
    file and the local fact (ISO 8601 in UTC sorts as text), the file on a tie."""
    fact = from_fact if isinstance(from_fact, Mapping) and from_fact else None
    if fact is not None and fact.get("schema") != EVALUATION_SCHEMA:
        fact = None
    if from_file is None:
        return (fact, "fact") if fact is not None else (None, None)
    if fact is None:
        return from_file, "file"
    file_time = text(from_file.get("measured_at")) or ""
    fact_time = text(fact.get("measured_at")) or ""
    return (fact, "fact") if fact_time > file_time else (from_file, "file")


def evaluation_entry(document: Mapping[str, Any] | None, source: str | None) -> dict[str, Any]:
    if document is None:
        return {}
    bandwidth = mapping(document.get("memory_bandwidth"))
    engine = mapping(document.get("engine"))
    cpu = mapping(document.get("cpu"))
    cuda = mapping(document.get("cuda_program"))
    return {
        "measured_at": text(document.get("measured_at")),
        "source": source,
        "cpu": {
            "model": text(cpu.get("model")),
            **_pick(cpu, ("sockets", "cores", "threads", "numa_nodes", "llc_bytes"), integer),
        }
        if cpu
        else None,
        "memory_bandwidth": {
            "gib_per_s": number(bandwidth.get("gib_per_s")),
            "tool": text(bandwidth.get("tool")),
            "test": text(bandwidth.get("test")),
            "threads": integer(bandwidth.get("threads")),
            "working_set_bytes": integer(bandwidth.get("working_set_bytes")),
            "reason": text(bandwidth.get("reason")),
        }
        if bandwidth
        else None,
        "engine": {
            "build": text(engine.get("build")),
            "model": text(engine.get("model")),
            "model_bytes": integer(engine.get("model_bytes")),
            **_pick(
                engine,
                (
                    "decode_tokens_per_s",
                    "prefill_tokens_per_s",
                    "bytes_per_token",
                    "physical_limit_tokens_per_s",
                    "fraction_of_limit",
                ),
            ),
            "fraction_note": text(engine.get("fraction_note")),
        }
        if engine
        else None,
        "cuda_program": {
            "compiled": cuda.get("compiled") if isinstance(cuda.get("compiled"), bool) else None,
            "ran": cuda.get("ran") if isinstance(cuda.get("ran"), bool) else None,
            "nvcc_release": text(cuda.get("nvcc_release")),
            "reason": text(cuda.get("reason")),
        }
        if cuda
        else None,
        "p2p": [
            {
                "from": integer(mapping(link).get("from")),
                "to": integer(mapping(link).get("to")),
                "gib_per_s": number(mapping(link).get("gib_per_s")),
            }
            for link in items(document.get("p2p"))
        ],
        "verdicts": [
            {
                "severity": text(mapping(verdict).get("severity")) or "warning",
                "subject": text(mapping(verdict).get("subject")) or "",
                "message": text(mapping(verdict).get("message")) or "",
            }
            for verdict in items(document.get("verdicts"))
        ],
    }


# -- GPUs --------------------------------------------------------------------------------------


def _last_samples(document: Mapping[str, Any] | None) -> dict[int, Mapping[str, Any]]:
    """Each GPU's last sample (by time) during the evaluation."""
    last: dict[int, tuple[float, Mapping[str, Any]]] = {}
    for sample in items(mapping(document).get("gpu_samples")):
        sample = mapping(sample)
        gpu, when = integer(sample.get("gpu")), number(sample.get("t"))
        if gpu is None:
            continue
        when = when if when is not None else -1.0
        if gpu not in last or when >= last[gpu][0]:
            last[gpu] = (when, sample)
    return {gpu: sample for gpu, (_, sample) in last.items()}


def _pcie(fact_gpu: Mapping[str, Any], eval_gpu: Mapping[str, Any]) -> dict[str, Any]:
    """The link as the evaluation measured it under load, else as the facts saw it (an idle
    link may run below its generation to save power: the facts' figure is a lower bound)."""
    measured = mapping(eval_gpu.get("pcie"))
    if measured:
        link = _pick(measured, ("gen_current", "gen_max", "width_current", "width_max"), integer)
        source = "evaluation"
    else:
        link = {
            "gen_current": integer(fact_gpu.get("pcie_gen_current")),
            "gen_max": integer(fact_gpu.get("pcie_gen_max")),
            "width_current": integer(fact_gpu.get("pcie_width_current")),
            "width_max": integer(fact_gpu.get("pcie_width_max")),
        }
        source = "facts" if any(value is not None for value in link.values()) else None
    pairs = [(link["gen_current"], link["gen_max"]), (link["width_current"], link["width_max"])]
    if any(current is not None and most is not None and current < most for current, most in pairs):
        at_max: bool | None = False
    elif all(current is not None and most is not None for current, most in pairs):
        at_max = True
    else:
        at_max = None
    return {
        **link,
        "at_max": at_max,
        "source": source,
        **_pick(measured, ("expected_gib_per_s", "h2d_gib_per_s", "d2h_gib_per_s")),
    }


def gpu_entries(
    facts: Mapping[str, Any] | None,
    evaluation: Mapping[str, Any] | None,
    live_vram: Mapping[int, Mapping[str, float | None]],
) -> list[dict[str, Any]]:
    """One entry per GPU: the facts' GPUs, joined to the evaluation's (by UUID, else index)
    and to Prometheus' VRAM series (by index); GPUs only the evaluation names follow."""
    hardware = mapping(mapping(facts).get("llmfleet_hardware"))
    fact_gpus = [mapping(gpu) for gpu in items(hardware.get("gpus"))]
    eval_gpus = [mapping(gpu) for gpu in items(mapping(evaluation).get("gpus"))]
    samples = _last_samples(evaluation)
    by_uuid = {text(gpu.get("uuid")): gpu for gpu in eval_gpus if text(gpu.get("uuid"))}
    by_index = {integer(gpu.get("index")): gpu for gpu in eval_gpus}
    used_eval: set[int] = set()
    joined: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
    for position, fact_gpu in enumerate(fact_gpus):
        index = integer(fact_gpu.get("index"))
        index = position if index is None else index
        eval_gpu = by_uuid.get(text(fact_gpu.get("uuid"))) or by_index.get(index) or {}
        if eval_gpu:
            used_eval.add(id(eval_gpu))
        joined.append(({**fact_gpu, "index": index}, eval_gpu))
    joined += [({}, gpu) for gpu in eval_gpus if id(gpu) not in used_eval]
    entries = []
    for position, (fact_gpu, eval_gpu) in enumerate(joined):
        index = integer(fact_gpu.get("index"))
        if index is None:
            index = integer(eval_gpu.get("index"))
        index = position if index is None else index
        total = integer(fact_gpu.get("memory_total_mib"))
        vram: dict[str, Any] = {"total_mib": total, "used_mib": None, "free_mib": None}
        live = live_vram.get(index)
        sample = samples.get(index)
        if live is not None:
            vram.update(used_mib=live.get("used_mib"), free_mib=live.get("free_mib"))
            vram["source"] = "prometheus"
        elif sample is not None:
            used = number(sample.get("memory_used_mib"))
            sample_total = number(sample.get("memory_total_mib"))
            total_known = sample_total if sample_total is not None else total
            vram.update(
                used_mib=used,
                free_mib=None if used is None or total_known is None else total_known - used,
            )
            vram["source"] = "evaluation"
        else:
            vram["source"] = None
        if vram["total_mib"] is None and None not in (vram["used_mib"], vram["free_mib"]):
            vram["total_mib"] = vram["used_mib"] + vram["free_mib"]
        entries.append(
            {
                "index": index,
                "name": text(fact_gpu.get("name"))
                or text(eval_gpu.get("name"))
                or text(fact_gpu.get("pci_device_id")),
                "uuid": text(fact_gpu.get("uuid")) or text(eval_gpu.get("uuid")),
                "pci_bus_id": text(fact_gpu.get("pci_bus_id")),
                "mig_enabled": fact_gpu.get("mig_enabled")
                if isinstance(fact_gpu.get("mig_enabled"), bool)
                else None,
                "memory_total_mib": total,
                "usable_vram_mib": integer(fact_gpu.get("usable_vram_mib")),
                "memory_bandwidth_gib_per_s": number(eval_gpu.get("memory_bandwidth_gib_per_s")),
                "reason": text(eval_gpu.get("reason")),
                "vram": vram,
                "pcie": _pcie(fact_gpu, eval_gpu),
            }
        )
    return entries


# -- serving -----------------------------------------------------------------------------------


def serving_entry(facts: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The blue/green local fact: which color is active and what each one runs."""
    state = mapping(mapping(mapping(facts).get("ansible_local")).get("blue_green"))
    if not state:
        return None
    active, previous = text(state.get("active")), text(state.get("previous"))
    colors = []
    for color, entry in sorted(mapping(state.get("colors")).items()):
        entry = mapping(entry)
        model = entry.get("model")
        model_map = mapping(model)
        colors.append(
            {
                "color": str(color),
                "active": color == active,
                "previous": color == previous,
                "build": text(entry.get("build")),
                "model": text(model_map.get("name")) or text(model),
                "model_sha256": text(model_map.get("sha256")),
                "model_size_bytes": integer(model_map.get("size")),
                "port": integer(entry.get("port")),
                "args": text(entry.get("args")),
            }
        )
    return {"active": active, "previous": previous, "colors": colors}


# -- bench -------------------------------------------------------------------------------------


def _distribution(value: Any) -> dict[str, Any]:
    figures = mapping(value)
    return {"n": integer(figures.get("n")), **_pick(figures, ("mean", *PERCENTILE_KEYS))}


def bench_entry(document: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if document is None:
        return None
    levels = []
    for level in items(document.get("levels")):
        level = mapping(level)
        throughput = mapping(level.get("throughput"))
        tpot = _distribution(level.get("tpot_s"))
        levels.append(
            {
                "name": text(level.get("name")) or "?",
                "mode": text(level.get("mode")),
                "concurrency": integer(level.get("concurrency")),
                "rate": number(level.get("rate")),
                **_pick(level, ("requests", "succeeded", "failed"), integer),
                "output_tokens_per_s": number(throughput.get("output_tokens_per_s")),
                "requests_per_s": number(throughput.get("requests_per_s")),
                "decode_tokens_per_s_per_stream": _round(1 / tpot["mean"], 2)
                if tpot["mean"]
                else None,
                "ttft_s": _distribution(level.get("ttft_s")),
                "tpot_s": tpot,
                "itl_s": _distribution(level.get("itl_s")),
                "e2e_s": _distribution(level.get("e2e_s")),
            }
        )
    return {
        "started_at": text(document.get("started_at")),
        "endpoint": text(document.get("endpoint")),
        "model": text(document.get("model")),
        "tool": text(document.get("tool")),
        "levels": levels,
    }


def concurrency_levels(bench: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The closed-loop levels, by concurrency (the last run of a concurrency wins)."""
    by_concurrency = {
        level["concurrency"]: level
        for level in items(mapping(bench).get("levels"))
        if level.get("mode") == "concurrency" and level.get("concurrency") is not None
    }
    return [by_concurrency[key] for key in sorted(by_concurrency)]


# -- Prometheus --------------------------------------------------------------------------------


def instance_host(labels: Mapping[str, Any]) -> str | None:
    """The inventory name an `instance` label names (the monitoring role labels each target
    with it; a ``host:port`` or ``[v6]:port`` form has its port taken off)."""
    instance = text(labels.get("instance"))
    if instance is None:
        return None
    if instance.startswith("["):
        return instance[1:].split("]", 1)[0] or None
    if instance.count(":") == 1:
        return instance.split(":", 1)[0] or None
    return instance


def _sample_value(sample: Mapping[str, Any]) -> float | None:
    value = items(sample.get("value"))
    if len(value) != 2:
        return None
    try:
        parsed = float(value[1])
    except (TypeError, ValueError):
        return None
    return parsed if math.isfinite(parsed) else None


def prometheus_view(prometheus: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the report uses from Prometheus, per host: firing alerts, live VRAM per GPU
    index, whether the engine answers; plus the alerts no host label ties to a host."""
    view: dict[str, Any] = {
        "asked": prometheus is not None,
        "reachable": False,
        "alerts": {},
        "alerts_without_host": [],
        "vram": {},
        "up": {},
    }
    if prometheus is None or prometheus.get("error"):
        return view
    view["reachable"] = True
    series = mapping(prometheus.get("series"))
    errors = mapping(prometheus.get("errors"))
    view["alerts_known"] = "alerts" not in errors
    for sample in items(series.get("alerts")):
        labels = {str(k): str(v) for k, v in mapping(mapping(sample).get("metric")).items()}
        alert = {
            "alertname": labels.get("alertname"),
            "severity": labels.get("severity"),
            "action": labels.get("action"),
            "labels": dict(sorted(labels.items())),
        }
        host = instance_host(labels)
        if host is None:
            view["alerts_without_host"].append(alert)
        else:
            view["alerts"].setdefault(host, []).append(alert)
    for name, key in (("fb_used", "used_mib"), ("fb_free", "free_mib")):
        for sample in items(series.get(name)):
            sample = mapping(sample)
            labels = mapping(sample.get("metric"))
            host = instance_host(labels)
            try:
                gpu = int(str(labels.get("gpu")))
            except ValueError:
                continue
            if host is None:
                continue
            slot = (
                view["vram"]
                .setdefault(host, {})
                .setdefault(gpu, {"used_mib": None, "free_mib": None})
            )
            slot[key] = _sample_value(sample)
    if "up" not in errors:
        for sample in items(series.get("up")):
            sample = mapping(sample)
            host = instance_host(mapping(sample.get("metric")))
            value = _sample_value(sample)
            if host is not None and value is not None:
                view["up"][host] = view["up"].get(host, False) or value == 1
    view["up_known"] = "up" not in errors
    return view


# -- a host ------------------------------------------------------------------------------------


def host_entry(
    host: str,
    facts: Mapping[str, Any] | None,
    evaluation_file: Mapping[str, Any] | None,
    bench_document: Mapping[str, Any] | None,
    view: Mapping[str, Any],
) -> dict[str, Any]:
    local = mapping(mapping(facts).get("ansible_local"))
    chosen, source = choose_evaluation(evaluation_file, local.get("hardware_eval"))
    evaluation = evaluation_entry(chosen, source) or None
    live = view["vram"].get(host, {}) if view["reachable"] else {}
    gpus = gpu_entries(facts, chosen, live)
    serving = serving_entry(facts)
    bench = bench_entry(bench_document)
    alerts: list[dict[str, Any]] | None = None
    if view["reachable"] and view.get("alerts_known", True):
        alerts = sorted(
            view["alerts"].get(host, []),
            key=lambda alert: (alert["alertname"] or "", alert["labels"].get("gpu", "")),
        )
    answers: bool | None = None
    if view["reachable"] and view.get("up_known", True):
        answers = view["up"].get(host, False)
    hardware = hardware_entry(facts)
    return {
        "host": host,
        "tier": tier_entry(facts),
        "hardware": hardware,
        "gpus": gpus,
        "evaluation": evaluation,
        "serving": serving,
        "bench": bench,
        "alerts": alerts,
        "answers": answers,
        "summary": host_summary(hardware, gpus, evaluation, serving, bench, alerts),
    }


def host_summary(
    hardware: Mapping[str, Any] | None,
    gpus: list[dict[str, Any]],
    evaluation: Mapping[str, Any] | None,
    serving: Mapping[str, Any] | None,
    bench: Mapping[str, Any] | None,
    alerts: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """The figures one row of a table shows (text report, the page's overview)."""
    engine = mapping(mapping(evaluation).get("engine"))
    bandwidth = mapping(mapping(evaluation).get("memory_bandwidth"))
    levels = concurrency_levels(bench)
    c1 = next((level for level in levels if level["concurrency"] == 1), None)
    decode, decode_source = None, None
    if c1 is not None and c1.get("decode_tokens_per_s_per_stream") is not None:
        decode, decode_source = c1["decode_tokens_per_s_per_stream"], "bench"
    elif engine.get("decode_tokens_per_s") is not None:
        decode, decode_source = engine["decode_tokens_per_s"], "evaluation"
    fraction, fraction_source = engine.get("fraction_of_limit"), None
    limit = engine.get("physical_limit_tokens_per_s")
    if fraction is not None:
        fraction_source = "evaluation"
    elif (
        not engine.get("fraction_note")
        and decode_source == "bench"
        and limit
        and decode is not None
    ):
        fraction, fraction_source = _round(decode / limit, 4), "bench"
    sources = {gpu["vram"]["source"] for gpu in gpus}
    used = _sum(gpu["vram"]["used_mib"] for gpu in gpus)
    free = _sum(gpu["vram"]["free_mib"] for gpu in gpus)
    vram_source = sources.pop() if len(sources) == 1 else None
    if vram_source is None:
        used = free = None
    if not gpus and hardware is not None and hardware.get("source") == "none":
        used, free, vram_source = 0, 0, "facts"
    active = next((color for color in mapping(serving).get("colors", ()) if color["active"]), None)
    return {
        "gpu_count": len(gpus) if gpus or hardware is None else hardware.get("gpu_count"),
        "usable_vram_mib": mapping(hardware).get("usable_vram_mib"),
        "vram_used_mib": used,
        "vram_free_mib": free,
        "vram_free_source": vram_source,
        "memory_bandwidth_gib_per_s": bandwidth.get("gib_per_s"),
        "decode_tokens_per_s_c1": decode,
        "decode_c1_source": decode_source,
        "fraction_of_limit": fraction,
        "fraction_source": fraction_source,
        "active_model": active["model"] if active else None,
        "alerts_firing": None if alerts is None else len(alerts),
    }


# -- the fleet ---------------------------------------------------------------------------------


def tier_sort_key(name: str) -> tuple[int, str]:
    if name == UNDECIDED:
        return (len(TIER_ORDER) + 1, name)
    if name in TIER_ORDER:
        return (TIER_ORDER.index(name), "")
    return (len(TIER_ORDER), name)


def fleet_entry(hosts: list[dict[str, Any]], view: Mapping[str, Any]) -> dict[str, Any]:
    """Hosts by tier, and the capacity left per tier (see the module's definitions)."""
    tiers: dict[str, list[dict[str, Any]]] = {}
    for host in hosts:
        tiers.setdefault(host["tier"]["name"] or UNDECIDED, []).append(host)
    rows = []
    for name in sorted(tiers, key=tier_sort_key):
        members = tiers[name]
        live = [host for host in members if host["answers"] is not None]
        answering = [host for host in members if host["answers"]]
        known = [
            host
            for host in answering
            if host["summary"]["vram_free_source"] in ("prometheus", "facts")
            and host["summary"]["vram_free_mib"] is not None
        ]
        capacity_known = bool(live) and len(live) == len(members)
        rows.append(
            {
                "tier": name,
                "hosts": [host["host"] for host in members],
                "count": len(members),
                "answering": len(answering) if capacity_known else None,
                "vram_free_mib": sum(host["summary"]["vram_free_mib"] for host in known)
                if capacity_known
                else None,
                "vram_free_unknown": sorted(host["host"] for host in answering if host not in known)
                if capacity_known
                else [],
            }
        )
    alerts = [host["alerts"] for host in hosts if host["alerts"] is not None]
    firing = None
    if view["reachable"] and view.get("alerts_known", True):
        firing = sum(len(entry) for entry in alerts) + len(view["alerts_without_host"])
    return {
        "hosts": len(hosts),
        "tiers": rows,
        "alerts_firing": firing,
        "alerts_without_host": view["alerts_without_host"],
    }


def build_report(
    facts: Mapping[str, Mapping[str, Any]],
    evaluations: Mapping[str, Mapping[str, Any]],
    benches: Mapping[str, Mapping[str, Any]],
    prometheus: Mapping[str, Any] | None,
    *,
    generated_at: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    problems: Iterable[str] = (),
) -> dict[str, Any]:
    """The report document (see the module's docstring) from what was read.

    Hosts: those of the fact cache, and any that only an evaluation or a bench file names
    (with a problem: it is not in the fact cache). `problems` are the readers' (a file
    left out, a document that breaks its schema); they come first in the document's.
    """
    found = list(problems)
    view = prometheus_view(prometheus)
    names = sorted(set(facts) | set(evaluations) | set(benches))
    hosts = []
    for name in names:
        if name not in facts:
            found.append(f"{name}: has results but no facts in the fact cache (run the preflight)")
        hosts.append(
            host_entry(name, facts.get(name), evaluations.get(name), benches.get(name), view)
        )
    known = set(names)
    for host in sorted(set(view["alerts"]) - known):
        found.append(
            f"Prometheus: {len(view['alerts'][host])} alert(s) firing on instance {host}, "
            "which is not in the fact cache"
        )
    return {
        "schema": REPORT_SCHEMA,
        "generated_at": generated_at,
        "inputs": dict(inputs or {}),
        "prometheus": None
        if prometheus is None
        else {
            "url": text(prometheus.get("url")),
            "reachable": view["reachable"],
            "error": text(prometheus.get("error")),
            "errors": dict(mapping(prometheus.get("errors"))),
        },
        "problems": found,
        "hosts": hosts,
        "fleet": fleet_entry(hosts, view),
    }
