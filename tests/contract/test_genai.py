"""The official google-genai client (v1 and v1beta1) against the emulator: the whole tuning flow."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google import genai
from google.genai import errors, types
from google.oauth2 import service_account
from google.oauth2.credentials import Credentials

from tuningd.emulator import EmulatorConfig, Faults, ManualClock, ThreadedEmulator

pytestmark = pytest.mark.contract

TRAIN = "gs://my-bucket/sft/train.jsonl"


def make_client(emu: ThreadedEmulator, api_version: str) -> genai.Client:
    return genai.Client(
        vertexai=True, project="my-proj", location="us-central1",
        credentials=Credentials(token="x"),  # type: ignore[no-untyped-call]
        http_options=types.HttpOptions(base_url=emu.url, api_version=api_version))


def tune(client: genai.Client, **config: object) -> types.TuningJob:
    return client.tunings.tune(
        base_model="gemini-2.5-flash",
        training_dataset=types.TuningDataset(gcs_uri=TRAIN),
        config=types.CreateTuningJobConfig(tuned_model_display_name="contract", **config))


@pytest.mark.parametrize("api_version", ["v1", "v1beta1"])
def test_create_poll_succeed(emulator: ThreadedEmulator, api_version: str) -> None:
    """tune -> PENDING; after the clock runs, get shows SUCCEEDED with a tuned model."""
    client = make_client(emulator, api_version)
    job = tune(client, epoch_count=2, adapter_size="ADAPTER_SIZE_FOUR",
               labels={"local-id": "abc-123"})
    assert job.name is not None and job.name.startswith("projects/123456789012/")
    assert job.state == types.JobState.JOB_STATE_PENDING
    emulator.advance(3)
    running = client.tunings.get(name=job.name)
    assert running.state == types.JobState.JOB_STATE_RUNNING
    emulator.advance(100)
    done = client.tunings.get(name=job.name)
    assert done.has_ended and done.has_succeeded
    assert done.tuned_model is not None and done.tuned_model.model is not None
    assert done.tuned_model.model.endswith("@1")
    assert done.tuned_model.checkpoints and len(done.tuned_model.checkpoints) == 2
    assert done.experiment is not None
    assert done.supervised_tuning_spec is not None
    hyper = done.supervised_tuning_spec.hyper_parameters
    assert hyper is not None and hyper.epoch_count == 2
    request = emulator.snapshot()["jobs"][0]["request"]
    assert request["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == "ADAPTER_SIZE_FOUR"


def test_list_with_pagination_and_label_filter(emulator: ThreadedEmulator) -> None:
    """list with page_size=2 follows all pages; a label filter narrows the result."""
    client = make_client(emulator, "v1")
    names = []
    for i in range(5):
        names.append(tune(client, labels={"batch": "x" if i < 3 else "y"}).name)
        emulator.advance(1)
    listed = [j.name for j in client.tunings.list(config={"page_size": 2})]
    assert listed == list(reversed(names))
    filtered = [j.name for j in client.tunings.list(
        config={"page_size": 2, "filter": "labels.batch=y"})]
    assert filtered == [names[4], names[3]]


def test_cancel_to_cancelled(emulator: ThreadedEmulator) -> None:
    """cancel -> CANCELLING -> CANCELLED with error code 1."""
    client = make_client(emulator, "v1beta1")
    job = tune(client)
    assert job.name is not None
    client.tunings.cancel(name=job.name)
    assert client.tunings.get(name=job.name).state == types.JobState.JOB_STATE_CANCELLING
    emulator.advance(1)
    done = client.tunings.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_CANCELLED
    assert done.error is not None and done.error.code == 1


def test_documented_errors(emulator: ThreadedEmulator) -> None:
    """400 validation, 404 unknown job, 400 FAILED_PRECONDITION cancel, 429 quota surface as
    ClientError with Google's code and status."""
    client = make_client(emulator, "v1")
    with pytest.raises(errors.ClientError) as bad:
        tune(client, adapter_size="ADAPTER_SIZE_THIRTY_TWO")
    assert bad.value.code == 400 and bad.value.status == "INVALID_ARGUMENT"
    missing = "projects/123456789012/locations/us-central1/tuningJobs/1234567890123456789"
    with pytest.raises(errors.ClientError) as nf:
        client.tunings.get(name=missing)
    assert nf.value.code == 404 and nf.value.status == "NOT_FOUND"
    job = tune(client)
    assert job.name is not None
    emulator.advance(100)
    with pytest.raises(errors.ClientError) as ended:
        client.tunings.cancel(name=job.name)
    assert ended.value.code == 400 and ended.value.status == "FAILED_PRECONDITION"

    def quota() -> None:
        emulator.state.faults = Faults(error_rates={"create": 1.0},
                                       error_statuses={"create": 429})
    emulator.call(quota)
    with pytest.raises(errors.ClientError) as limited:
        tune(client)
    assert limited.value.code == 429 and limited.value.status == "RESOURCE_EXHAUSTED"


def test_server_errors_are_server_error(emulator: ThreadedEmulator) -> None:
    """An injected 503 surfaces as genai ServerError."""
    client = make_client(emulator, "v1")

    def unavailable() -> None:
        emulator.state.faults = Faults(error_rates={"get": 1.0})
    emulator.call(unavailable)
    with pytest.raises(errors.ServerError) as err:
        client.tunings.get(name="projects/1/locations/us-central1/tuningJobs/1")
    assert err.value.code == 503


def test_service_account_key_against_strict_auth(tmp_path: Path) -> None:
    """A service-account key whose token_uri is the emulator authenticates genai under
    strict_auth: the token comes from POST /token and the API accepts it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    config = EmulatorConfig(strict_auth=True, pending_seconds=1, job_seconds=10)
    with ThreadedEmulator(config, clock=ManualClock()) as emu:
        creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            {"type": "service_account", "project_id": "my-proj", "private_key_id": "k",
             "private_key": pem, "client_email": "sa@my-proj.iam.gserviceaccount.com",
             "client_id": "1", "token_uri": f"{emu.url}/token"},
            scopes=["https://www.googleapis.com/auth/cloud-platform"])
        client = genai.Client(
            vertexai=True, project="my-proj", location="us-central1", credentials=creds,
            http_options=types.HttpOptions(base_url=emu.url, api_version="v1"))
        job = tune(client)
        assert job.state == types.JobState.JOB_STATE_PENDING
        snap = emu.snapshot()
        assert snap["tokensIssued"] == 1
        assert snap["requestCounts"]["create"] == {"200": 1}
