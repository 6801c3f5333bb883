"""LLM judges behind one OpenAI-compatible client: OpenAI, `vllm serve`, `transformers serve`, or a local
`transformers serve` that we start ourselves on 127.0.0.1 and stop when the process ends.

Every call goes through an on-disk cache keyed by (judge model, messages, parameters, repeat), so a re-run
of a finished evaluation makes zero calls and a killed one resumes where it stopped. Calls run with bounded
concurrency, each with a time-out and retries with exponential backoff; a call that still fails is returned
as a failure (never cached), so the next run retries only it. API keys are read from the environment at
call time and never written anywhere.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.config import ModelConfig
from harness.method import StageError
from harness.models import cache_root, model_path
from harness.registry import judges

Messages = list[dict[str, str]]


@dataclass
class JudgeConfig:
    """Which judge answers, and how it is called. The paper's judge is GPT-4 at temperature 0."""

    backend: str = field(
        default="openai",
        metadata={"help": "a judge from the registry: 'openai' (any OpenAI-compatible endpoint at base_url) or "
                  "'local' (starts `transformers serve <model>` on 127.0.0.1 and stops it when done)"},
    )
    model: str = field(
        default="gpt-4",
        metadata={"help": "model name sent to the endpoint; with backend=local a model source "
                  "('smollm2-135m-instruct', a folder or hub id) served by `transformers serve`"},
    )
    base_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (None: OpenAI)"}
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "environment variable holding the API key (read at call time, never stored)"},
    )
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature of the judge"})
    max_tokens: int = field(default=2048, metadata={"help": "longest judgment, in tokens (FastChat: 2048)"})
    reply_prefix: bool = field(
        default=False,
        metadata={"help": "start the judge's reply with the benchmark's answer format (AlpacaEval 'Output (', "
                  "MT-Bench 'Rating: [[') so that it answers in format and nothing else: for small local judges "
                  "that rarely do otherwise; needs backend=local (the judge's chat template is rendered here)"},
    )
    repeats: int = field(
        default=1, metadata={"help": "judge every item this many times and keep the median (GPT-4 varies at T=0)"}
    )
    concurrency: int = field(default=8, metadata={"help": "judge calls in flight at once"})
    retries: int = field(default=4, metadata={"help": "retries of a failed call, with exponential backoff"})
    backoff_s: float = field(default=2.0, metadata={"help": "first backoff; doubles after each retry"})
    timeout_s: float = field(default=120.0, metadata={"help": "time-out of one call, in seconds"})
    max_failure_rate: float = field(
        default=0.0,
        metadata={"help": "fail the stage when more than this share of calls failed (the rest stay cached)"},
    )
    usd_per_1k_input_tokens: float = field(
        default=0.03, metadata={"help": "price used for the cost estimate (gpt-4: $0.03 per 1k prompt tokens)"}
    )
    usd_per_1k_output_tokens: float = field(
        default=0.06, metadata={"help": "price used for the cost estimate (gpt-4: $0.06 per 1k completion tokens)"}
    )
    local_device: str = field(default="cpu", metadata={"help": "backend=local: device of `transformers serve`"})
    local_continuous_batching: bool = field(
        default=True,
        metadata={"help": "backend=local: serve concurrent calls in one batch (on 2 CPU cores: ~32 instead of ~13 "
                  "tokens/s with 8 calls in flight)"},
    )
    local_kv_cache_tokens: int = field(
        default=16384,
        metadata={"help": "backend=local with continuous batching: KV-cache size in tokens (blocks of 32); left to "
                  "itself the server sizes it for a GPU and takes ~12 GiB of RAM on a CPU"},
    )
    local_start_timeout_s: float = field(
        default=300.0, metadata={"help": "backend=local: how long to wait for the server's /health"}
    )


class JudgeError(StageError):
    """The judge could not be reached or failed too often; the message says what to check."""


@dataclass
class JudgeReply:
    text: str | None  # None when the call failed
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


@dataclass
class JudgeUsage:
    """What a batch of judge calls cost: the numbers a results file reports."""

    requests: int = 0  # calls made now (cache hits are not calls)
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, reply: JudgeReply) -> None:
        if reply.cached:
            self.cached += 1
        else:
            self.requests += 1
        if reply.text is None:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(reply.error or "unknown error")
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens

    def summary(self, cfg: JudgeConfig) -> dict:
        if cfg.backend == "local":
            cost, basis = 0.0, "a local model: no API cost"
        else:
            cost = (self.prompt_tokens * cfg.usd_per_1k_input_tokens
                    + self.completion_tokens * cfg.usd_per_1k_output_tokens) / 1000
            basis = (f"${cfg.usd_per_1k_input_tokens}/1k prompt, ${cfg.usd_per_1k_output_tokens}/1k completion tokens, "
                     "cached replies included: what the judging costs from scratch")
        return {
            **asdict(self),
            "requests_per_s": self.requests / self.wall_s if self.wall_s and self.requests else None,
            "estimated_cost_usd": round(cost, 6),
            "cost_basis": basis,
        }


def judged_by(judge: dict, usage: dict, prompt_version: str) -> dict:
    """The fields every judged evaluation records: who judged with which prompt, and what it cost."""
    return {"judge": {**judge, "prompt_version": prompt_version}, "judge_usage": usage,
            "judge_requests": usage["requests"], "judge_requests_per_s": usage["requests_per_s"]}


class JudgeCache:
    """One JSON file per (model, messages, parameters) under ``root``, written atomically."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @staticmethod
    def key(model: str, messages: Messages, params: dict) -> str:
        blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # a torn file from a crash before atomic writes: call again
            return None

    def put(self, key: str, record: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, ensure_ascii=False)
        os.replace(tmp, path)


JUDGE_CACHE_ENV = "HARNESS_JUDGE_CACHE"


def default_cache() -> JudgeCache:
    """Shared by every run on this machine (``$HARNESS_JUDGE_CACHE``, else ``<harness cache>/judge_cache``)."""
    return JudgeCache(Path(os.environ.get(JUDGE_CACHE_ENV) or cache_root() / "judge_cache"))


class ChatJudge:
    """Chat completions from one OpenAI-compatible endpoint, cached, concurrent, retried."""

    def __init__(self, cfg: JudgeConfig, base_url: str | None, model: str, cache: JudgeCache | None = None,
                 extra_body: dict | None = None, label: str | None = None,
                 render: Callable[[Messages], str] | None = None):
        self.cfg = cfg
        self.render = render  # chat messages -> the judge's prompt text; needed to start its reply for it
        self.base_url = base_url
        self.model = model
        self.cache = cache or default_cache()
        self.extra_body = extra_body or {}
        self.label = label or model  # what results record as the judge (a local path is not a judge's name)
        self._client = None
        self._lock = threading.Lock()

    def describe(self) -> dict:
        return {"model": self.label, "backend": self.cfg.backend, "base_url": self.base_url or "https://api.openai.com/v1",
                "temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens, "repeats": self.cfg.repeats,
                "reply_prefix": self.cfg.reply_prefix}

    def client(self):
        with self._lock:
            if self._client is None:
                from openai import OpenAI

                # A local server needs no key; OpenAI does, and the SDK's own error says where it looked.
                key = os.environ.get(self.cfg.api_key_env) or ("unused" if self.base_url else None)
                if key is None:
                    raise JudgeError(f"judge {self.model}: set {self.cfg.api_key_env} in the environment "
                                     "(it is read there and never written to any file), or point judge.base_url "
                                     "at a local OpenAI-compatible server")
                self._client = OpenAI(base_url=self.base_url, api_key=key, timeout=self.cfg.timeout_s, max_retries=0)
            return self._client

    def params(self, repeat: int, prefix: str | None = None) -> dict:
        return {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens, "repeat": repeat,
                **({"extra_body": self.extra_body} if self.extra_body else {}),
                **({"reply_prefix": prefix} if prefix else {})}

    def _request(self, messages: Messages, prefix: str | None) -> tuple[str | None, object]:
        """One call: chat completions, or, to start the reply with ``prefix``, a text completion of the
        rendered chat prompt followed by the prefix. Returns (reply text, usage)."""
        common = {"model": self.model, "temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens,
                  "extra_body": self.extra_body or None}
        if prefix:
            response = self.client().completions.create(prompt=self.render(messages) + prefix, **common)
            text = response.choices[0].text if response.choices else None
            return (None if text is None else prefix + text), response.usage
        response = self.client().chat.completions.create(messages=messages, **common)
        return (response.choices[0].message.content if response.choices else None), response.usage

    def complete(self, messages: Messages, repeat: int = 0, prefix: str | None = None) -> JudgeReply:
        params = self.params(repeat, prefix)
        key = JudgeCache.key(self.label, messages, params)
        hit = self.cache.get(key)
        if hit is not None:
            return JudgeReply(hit["text"], None, hit.get("prompt_tokens", 0), hit.get("completion_tokens", 0), True)
        error = None
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            try:
                text, usage = self._request(messages, prefix)
            except JudgeError:
                raise
            except Exception as err:  # openai raises connection, time-out and status errors; all are retried
                error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                continue
            if text is None:
                error = "the endpoint returned no message content"
                continue
            reply = JudgeReply(text, None, getattr(usage, "prompt_tokens", 0) or 0,
                               getattr(usage, "completion_tokens", 0) or 0)
            self.cache.put(key, {"model": self.label, "messages": messages, "params": params, "text": text,
                                 "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens})
            return reply
        return JudgeReply(None, error)

    def complete_all(self, requests: Sequence[Messages], on_reply: Callable[[int, JudgeReply], None] | None = None,
                     desc: str = "judge", prefix: str | None = None) -> tuple[list[list[JudgeReply]], JudgeUsage]:
        """Every request ``repeats`` times; replies[i][r] is request i's r-th repeat. With ``prefix`` (and
        ``reply_prefix`` on) every reply starts with it."""
        from tqdm.auto import tqdm

        prefix = prefix if self.cfg.reply_prefix else None
        if prefix and self.render is None:
            raise JudgeError(f"judge.reply_prefix needs a judge whose chat template the harness can render "
                             f"(backend=local); {self.label} at {self.base_url or 'OpenAI'} is backend={self.cfg.backend}")

        jobs = [(i, r) for i in range(len(requests)) for r in range(self.cfg.repeats)]
        replies: list[list[JudgeReply | None]] = [[None] * self.cfg.repeats for _ in requests]
        usage = JudgeUsage()
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool, \
                tqdm(total=len(jobs), desc=desc, unit="call") as bar:
            futures = {pool.submit(self.complete, requests[i], r, prefix): (i, r) for i, r in jobs}
            for future in futures:  # collected in submission order; all run concurrently
                i, r = futures[future]
                reply = future.result()
                replies[i][r] = reply
                usage.add(reply)
                bar.update()
                if on_reply:
                    on_reply(i, reply)
        usage.wall_s = time.perf_counter() - started
        return replies, usage

    def check_failures(self, usage: JudgeUsage, what: str) -> None:
        """Raise when more calls failed than allowed; made judgments are cached, so a re-run retries only the failures."""
        total = usage.requests + usage.cached
        if usage.failed and usage.failed / max(total, 1) > self.cfg.max_failure_rate:
            raise JudgeError(
                f"{what}: {usage.failed} of {total} judge calls to {self.label} at {self.base_url or 'OpenAI'} failed "
                f"(first: {usage.errors[0]}); the {total - usage.failed} judgments made are cached, "
                "run the same command again to retry the rest"
            )


# ------------------------------------------------------------------------------------- local judge server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """`transformers serve MODEL` on 127.0.0.1 at a free port; ``start`` waits for /health."""

    KV_BLOCK_TOKENS = 32

    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32", continuous_batching: bool = False,
                 kv_cache_tokens: int = 16384, log_dir: Path | None = None):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.continuous_batching = continuous_batching
        self.kv_cache_tokens = kv_cache_tokens
        self.port = free_port()
        self.log_path = Path(log_dir or cache_root() / "judge_servers") / f"transformers-serve-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        executable = Path(sys.executable).with_name("transformers")
        if not executable.exists():
            raise JudgeError("the local judge needs `transformers serve`: pip install 'transformers[serving]' "
                             "(or install this package with its [serve] extra)")
        return [str(executable), "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port),
                "--device", self.device, "--dtype", self.dtype, "--log-level", "warning",
                *(["--continuous-batching", "--cb-block-size", str(self.KV_BLOCK_TOKENS),
                   "--cb-num-blocks", str(max(1, self.kv_cache_tokens // self.KV_BLOCK_TOKENS))]
                  if self.continuous_batching else [])]

    def start(self, timeout_s: float = 300.0) -> LocalServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise JudgeError(f"`transformers serve {self.model}` exited with code {self.process.returncode} "
                                 f"before it was healthy; its log: {self.log_path}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise JudgeError(f"`transformers serve {self.model}` was not healthy after {timeout_s:.0f} s; log: {self.log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log_tail(self) -> str:
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])[-500:]


_local_servers: dict[tuple, LocalServer] = {}
_servers_lock = threading.Lock()


def local_server(model_dir: str, cfg: JudgeConfig) -> LocalServer:
    """One running server per (model, device) for this process: every judging stage of a run shares it."""
    key = (model_dir, cfg.local_device, cfg.local_continuous_batching, cfg.local_kv_cache_tokens)
    with _servers_lock:
        server = _local_servers.get(key)
        if server is None or server.process is None or server.process.poll() is not None:
            server = LocalServer(model_dir, cfg.local_device, continuous_batching=cfg.local_continuous_batching,
                                 kv_cache_tokens=cfg.local_kv_cache_tokens)
            server.start(cfg.local_start_timeout_s)
            _local_servers[key] = server
        return server


@atexit.register
def stop_local_servers() -> None:
    with _servers_lock:
        for server in _local_servers.values():
            server.stop()
        _local_servers.clear()


def openai_judge(cfg: JudgeConfig) -> ChatJudge:
    """Any OpenAI-compatible endpoint: OpenAI itself, `vllm serve`, `transformers serve`..."""
    return ChatJudge(cfg, cfg.base_url, cfg.model)


def local_judge(cfg: JudgeConfig) -> ChatJudge:
    """`transformers serve` of a model source (packaged, folder or hub id), started here and shared by the run."""
    served = model_path(ModelConfig(source=cfg.model))
    server = local_server(served, cfg)
    # transformers serve samples greedily unless told to sample (FACTS.md): ask for it when T > 0.
    extra = {"generation_config": json.dumps({"do_sample": True})} if cfg.temperature > 0 else None
    return ChatJudge(cfg, server.base_url, served, extra_body=extra, label=f"{cfg.model} (local transformers serve)",
                     render=chat_renderer(served))


def chat_renderer(model_dir: str) -> Callable[[Messages], str]:
    """The served model's own chat template, ending where its reply starts."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return lambda messages: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def build_judge(cfg: JudgeConfig) -> ChatJudge:
    """The judge a config describes, by its backend's name in the judges registry (plugins add backends)."""
    return judges.get(cfg.backend)(cfg)
