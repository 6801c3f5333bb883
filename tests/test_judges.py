"""Judge prompts, score parsing, the cached concurrent client, and its failure paths over real HTTP."""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evals import mt_bench_data
from evals.alpaca_eval import load_eval_set, model_shown_first, pairwise_messages, parse_preference
from evals.judges import ChatJudge, JudgeCache, JudgeConfig, JudgeError, free_port
from evals.mt_bench import MTBenchAnswersConfig, build_judge_messages, median_score, parse_score, select_questions
from harness.data.records import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MEDUSA = SHARED / "mt_bench" / "medusa"
MEDUSA_MODEL = "medusa-vicuna-7b-v1.3-1-temperature-0.0-posterior_threshold-0.09-posterior_alpha-0.3"
EVAL_SET = SHARED / "alpaca_eval" / "eval_set" / "alpaca_eval_gpt4_baseline.json"


# ------------------------------------------------------------------------------------ MT-Bench prompts


def medusa_rows_and_answers():
    rows = [json.loads(line) for line in gzip.open(MEDUSA / "model_judgment" / "gpt-4_single.jsonl.gz", "rt")]
    answers = {}
    with open(MEDUSA / "model_answer" / f"{MEDUSA_MODEL}.jsonl") as fh:
        for line in fh:
            answer = json.loads(line)
            answers[answer["question_id"]] = answer["choices"][0]["turns"]
    return [r for r in rows if r["model"] == MEDUSA_MODEL], answers


@pytest.mark.parametrize("turn", [1, 2])
def test_judge_prompts_equal_the_published_user_prompts(turn):
    """The Medusa judgments were graded with the original gpt-4 references; ours, built from the same
    answers, must match every user_prompt (and judge prompt name) of that file."""
    rows, answers = medusa_rows_and_answers()
    questions = {q["question_id"]: q for q in mt_bench_data.questions()}
    prompts, references = mt_bench_data.judge_prompts(), mt_bench_data.reference_answers("gpt-4")
    rows = [r for r in rows if r["turn"] == turn]
    assert len(rows) == 80
    for row in rows:
        name, messages = build_judge_messages(questions[row["question_id"]], answers[row["question_id"]], turn,
                                              prompts, references)
        assert name == row["judge"][1]
        assert messages[1]["content"] == row["user_prompt"], row["question_id"]
        assert messages[0] == {"role": "system", "content": prompts[name]["system_prompt"]}


def test_default_references_are_the_corrected_ones():
    rows, answers = medusa_rows_and_answers()
    questions = {q["question_id"]: q for q in mt_bench_data.questions()}
    prompts, corrected = mt_bench_data.judge_prompts(), mt_bench_data.reference_answers()
    assert MTBenchAnswersConfig().category_temperatures and len(corrected) == 30
    differ = {r["question_id"] for r in rows if r["turn"] == 1 and build_judge_messages(
        questions[r["question_id"]], answers[r["question_id"]], 1, prompts, corrected)[1][1]["content"] != r["user_prompt"]}
    assert differ == {q for q, question in questions.items() if question["category"] in ("math", "reasoning", "coding")}
    with pytest.raises(ValueError, match="unknown MT-Bench reference answers 'gpt-5'"):
        mt_bench_data.reference_answers("gpt-5")


@pytest.mark.parametrize("text, score", [
    ("The answer is fine. Rating: [[7]]", 7.0),
    ("Rating: [[8.5]] and later [[2]]", 8.5),
    ("I would give it [6] overall", 6.0),
    ("[[3]] beats the backup [9]", 3.0),
    ("no rating at all", -1),
    ("", -1),
])
def test_scores_parse_as_fastchat_does(text, score):
    assert parse_score(text) == score


def test_median_over_repeats_ignores_unparsed():
    assert median_score([7, -1, 9]) == 8
    assert median_score([3, 5, 9]) == 5
    assert median_score([-1, -1]) == -1


def test_question_selection_is_recorded_and_checked():
    questions, described = select_questions(MTBenchAnswersConfig(per_category=2))
    assert len(questions) == 16 and described == "all 80, first 2 per category: 16 questions"
    questions, _ = select_questions(MTBenchAnswersConfig(question_ids=[81, 160]))
    assert [q["question_id"] for q in questions] == [81, 160]
    with pytest.raises(ValueError, match="no MT-Bench question has id 7"):
        select_questions(MTBenchAnswersConfig(question_ids=[7]))


# ---------------------------------------------------------------------------------- AlpacaEval pairwise


def test_eval_set_loads_and_bad_records_name_file_record_and_field(tmp_path):
    records = load_eval_set(str(EVAL_SET), "unused")
    assert len(records) == 805 and records[0]["generator"] == "gpt4_1106_preview"
    bad = tmp_path / "eval.json"
    bad.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c"}]))
    with pytest.raises(DataError, match=r"eval.json, record 1, field 'output': expected a string, found NoneType"):
        load_eval_set(str(bad), "unused")
    with pytest.raises(DataError, match="no such file"):
        load_eval_set(str(tmp_path / "missing.json"), "unused")


def test_order_is_randomised_and_preferences_map_back():
    firsts = [model_shown_first(f"instruction {i}", seed=0) for i in range(400)]
    assert 150 < sum(firsts) < 250  # about half each way
    assert firsts != [model_shown_first(f"instruction {i}", seed=1) for i in range(400)]
    messages = pairwise_messages("Say hi", reference="REF", output="MODEL", model_first=True)
    assert messages[1]["content"].index("MODEL") < messages[1]["content"].index("REF")
    assert parse_preference("Output (a)", model_first=True) == 2.0
    assert parse_preference("output (b) is better", model_first=True) == 1.0
    assert parse_preference("Output (a)", model_first=False) == 1.0
    assert parse_preference('"Tie"', model_first=False) == 1.5
    assert parse_preference("both are bad", model_first=True) is None


# ------------------------------------------------------------------------- the client over real HTTP


class ScriptedEndpoint:
    """A real OpenAI-compatible HTTP endpoint on 127.0.0.1 whose behaviour the test scripts:
    'ok' (a rating), 'garbage' (a 200 that is not JSON), 'slow' (answers after the client's time-out)
    or 'fail' (HTTP 500)."""

    def __init__(self, behaviour: str = "ok"):
        self.behaviour = behaviour
        self.calls = 0
        self.requests: list[tuple[str, dict]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.calls += 1
                endpoint.requests.append((self.path, body))
                if endpoint.behaviour == "slow":
                    time.sleep(1.5)
                if endpoint.behaviour == "fail":
                    self.send_response(500)
                    self.end_headers()
                    return
                if self.path.endswith("/completions") and "prompt" in body:  # a text completion: one letter
                    payload = json.dumps({"id": "x", "object": "text_completion", "created": 0, "model": body["model"],
                                          "choices": [{"index": 0, "finish_reason": "length", "text": "b)"}],
                                          "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(payload.encode())
                    return
                payload = b"<html>not json</html>" if endpoint.behaviour == "garbage" else json.dumps({
                    "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": f"Rating: [[{len(body['messages'][-1]['content']) % 10 + 1}]]"}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def fast_config(**overrides) -> JudgeConfig:
    return JudgeConfig(**{"retries": 1, "backoff_s": 0.01, "timeout_s": 0.5, "concurrency": 2, **overrides})


REQUESTS = [[{"role": "user", "content": "x" * n}] for n in range(1, 7)]


def test_cache_makes_a_rerun_free_and_keys_on_parameters(tmp_path):
    cache = JudgeCache(tmp_path)
    with ScriptedEndpoint() as endpoint:
        judge = ChatJudge(fast_config(), endpoint.base_url, "judge-x", cache)
        replies, usage = judge.complete_all(REQUESTS)
        assert usage.requests == 6 and usage.cached == 0 and usage.failed == 0 and endpoint.calls == 6
        assert [r[0].text for r in replies] == [f"Rating: [[{n % 10 + 1}]]" for n in range(1, 7)]
        assert usage.summary(judge.cfg)["estimated_cost_usd"] == pytest.approx((66 * 0.03 + 18 * 0.06) / 1000)
        _, again = judge.complete_all(REQUESTS)
        assert again.requests == 0 and again.cached == 6 and endpoint.calls == 6
        # Another temperature, repeat or model is another question: no stale answer.
        _, hotter = ChatJudge(fast_config(temperature=0.5), endpoint.base_url, "judge-x", cache).complete_all(REQUESTS[:1])
        _, repeated = ChatJudge(fast_config(repeats=2), endpoint.base_url, "judge-x", cache).complete_all(REQUESTS[:1])
        assert hotter.requests == 1 and repeated.requests == 1 and repeated.cached == 1
    assert not any("api_key" in p.read_text() for p in tmp_path.rglob("*.json"))


@pytest.mark.parametrize("behaviour, error", [("garbage", "APIResponseValidationError|JSONDecodeError|APIError"),
                                              ("slow", "APITimeoutError"),
                                              ("fail", "InternalServerError")])
def test_failures_are_recorded_with_a_clear_message(tmp_path, behaviour, error):
    with ScriptedEndpoint(behaviour) as endpoint:
        judge = ChatJudge(fast_config(), endpoint.base_url, "judge-x", JudgeCache(tmp_path))
        replies, usage = judge.complete_all(REQUESTS[:2])
    assert usage.failed == 2 and all(r[0].text is None for r in replies)
    assert replies[0][0].error and __import__("re").search(error, replies[0][0].error)
    with pytest.raises(JudgeError, match=r"2 of 2 judge calls to judge-x at http://127.0.0.1:\d+/v1 failed .*"
                                         r"run the same command again"):
        judge.check_failures(usage, "test")
    assert not list(tmp_path.rglob("*.json"))  # failures are never cached


def test_refused_connection_keeps_the_judgments_already_made(tmp_path):
    cache = JudgeCache(tmp_path)
    with ScriptedEndpoint() as endpoint:
        ChatJudge(fast_config(), endpoint.base_url, "judge-x", cache).complete_all(REQUESTS[:3])
    refused = ChatJudge(fast_config(), f"http://127.0.0.1:{free_port()}/v1", "judge-x", cache)
    replies, usage = refused.complete_all(REQUESTS)
    assert usage.cached == 3 and usage.failed == 3
    assert "APIConnectionError" in replies[5][0].error
    with pytest.raises(JudgeError, match="3 of 6 judge calls .* failed .*the 3 judgments made are cached"):
        refused.check_failures(usage, "test")


def test_openai_backend_without_a_key_says_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge = ChatJudge(fast_config(), None, "gpt-4", JudgeCache(tmp_path))
    with pytest.raises(JudgeError, match="set OPENAI_API_KEY in the environment"):
        judge.complete_all(REQUESTS[:1])


def test_a_reply_prefix_makes_the_judge_continue_the_answer_format(tmp_path):
    render = lambda messages: "<chat>" + messages[-1]["content"] + "<assistant>"  # noqa: E731
    with ScriptedEndpoint() as endpoint:
        judge = ChatJudge(fast_config(reply_prefix=True), endpoint.base_url, "judge-x", JudgeCache(tmp_path), render=render)
        replies, usage = judge.complete_all(REQUESTS[:1], prefix="Output (")
        assert replies[0][0].text == "Output (b)" and usage.requests == 1
        assert endpoint.requests[-1][0] == "/v1/completions"
        assert endpoint.requests[-1][1]["prompt"] == "<chat>x<assistant>Output ("
        assert parse_preference(replies[0][0].text, model_first=False) == 2.0
        # Off by default: the same call is a chat completion, cached separately.
        plain = ChatJudge(fast_config(), endpoint.base_url, "judge-x", JudgeCache(tmp_path), render=render)
        replies, usage = plain.complete_all(REQUESTS[:1], prefix="Output (")
        assert usage.requests == 1 and endpoint.requests[-1][0] == "/v1/chat/completions"
    remote = ChatJudge(fast_config(reply_prefix=True), "http://127.0.0.1:9/v1", "judge-x", JudgeCache(tmp_path))
    with pytest.raises(JudgeError, match="reply_prefix needs a judge whose chat template"):
        remote.complete_all(REQUESTS[:1], prefix="Output (")


def test_win_rate_per_source_matches_a_hand_count():
    from evals.alpaca_eval import AlpacaEval

    rows = [("helpful_base", 2.0), ("helpful_base", 1.0), ("helpful_base", 1.5), ("koala", 2.0), ("koala", 2.0),
            ("koala", None), ("vicuna", 1.0)]
    annotations = [{"dataset": d, "preference": p, "output_1": "r" * 10, "output_2": "o" * 20, "generator_1": "ref",
                    "index": i, "failed_calls": 0} for i, (d, p) in enumerate(rows)]
    stats = AlpacaEval.summarize(annotations, judge={"model": "x"}, usage={"requests": 7, "requests_per_s": None})
    # helpful_base: a win, a loss, a draw -> (1 + 0 + 0.5) / 3; koala: two wins (one unjudged, dropped); vicuna: a loss
    assert stats["per_dataset"]["helpful_base"] == {
        "win_rate": pytest.approx(50.0), "standard_error": pytest.approx(100 * 0.5 / 3 ** 0.5),
        "n_wins": 1, "n_wins_base": 1, "n_draws": 1, "n_total": 3}
    assert stats["per_dataset"]["koala"]["win_rate"] == 100.0 and stats["per_dataset"]["koala"]["n_total"] == 2
    assert stats["per_dataset"]["vicuna"]["win_rate"] == 0.0 and stats["per_dataset"]["vicuna"]["standard_error"] is None
    assert stats["win_rate"] == pytest.approx(100 * (1 + 0 + 0.5 + 1 + 1 + 0) / 6) and stats["n_total"] == 6
    assert stats["parse_failures"] == 1 and stats["length_controlled_win_rate"] is None
