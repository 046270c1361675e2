"""Google-shaped errors the emulator answers with: the concurrent-job quota and the error rules
(403 IAM / API disabled / billing, 401, 400, 404, 409; 429 and 5xx as injected errors).

The texts follow what Google's front ends send (403 and 401 from public error reports); the
404/409 wordings are Google's generic ones for those codes."""

from __future__ import annotations

from typing import Any

from tuningd.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TuningdError,
    Unauthenticated,
)
from tuningd.emulator.faults import ErrorRule, injected_error

SERVICE = "aiplatform.googleapis.com"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_RPC_METHODS = {"create": "CreateTuningJob", "get": "GetTuningJob", "list": "ListTuningJobs",
                "cancel": "CancelTuningJob"}
_AUTH_HELP = ("Expected OAuth 2 access token, login cookie or other valid authentication "
              "credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")


def concurrency_error(active: int, limit: int, project_number: str) -> ResourceExhausted:
    """429 for a create when quota_mode=reject and the global concurrent-job quota is full."""
    return ResourceExhausted(
        f"Quota exceeded for aiplatform.googleapis.com/global_concurrent_tuning_jobs: the "
        f"project already has {active} active tuning job(s) and the limit of "
        f"'Global concurrent tuning jobs' is {limit}. Retry after a running job ends.",
        details=[{
            "@type": _ERROR_INFO,
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {"service": SERVICE,
                         "quota_metric": "aiplatform.googleapis.com/global_concurrent_tuning_jobs",
                         "quota_limit_value": str(limit),
                         "consumer": f"projects/{project_number}"},
        }, {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"subject": f"projects/{project_number}",
                            "description": "Global concurrent tuning jobs"}],
        }],
    )


def rule_error(rule: ErrorRule, *, method: str, api_version: str, project: str, location: str,
               job_id: str, project_number: str) -> TuningdError:
    """The error an ErrorRule answers with for one call (job_id is "" for create and list)."""
    parent = f"projects/{project}/locations/{location}"
    # IAM checks the resource itself: the job for get/cancel, its parent for create/list.
    resource = f"{parent}/tuningJobs/{job_id}" if job_id else parent
    status = rule.status
    if status == 403:
        return _permission_denied(rule.effective_reason or "IAM_PERMISSION_DENIED", method,
                                  project, resource, project_number)
    if status == 401:
        reason = rule.effective_reason or "ACCESS_TOKEN_EXPIRED"
        lead = ("Request is missing required authentication credential."
                if reason == "CREDENTIALS_MISSING"
                else "Request had invalid authentication credentials.")
        return Unauthenticated(f"{lead} {_AUTH_HELP}", details=[_error_info(
            reason, "googleapis.com",
            {"service": SERVICE,
             "method": f"google.cloud.aiplatform.{api_version}.GenAiTuningService."
                       f"{_RPC_METHODS.get(method, 'TuningJobs')}"})])
    if status == 400:
        if rule.effective_status_name == "FAILED_PRECONDITION":
            return FailedPrecondition("Precondition check failed.")
        return InvalidArgument("Request contains an invalid argument.")
    if status == 404:
        if job_id:
            return NotFound(f"The TuningJob does not exist: projects/{project_number}/locations/"
                            f"{location}/tuningJobs/{job_id}.")
        return NotFound("Requested entity was not found.")
    if status == 409:
        if rule.effective_status_name == "ALREADY_EXISTS":
            return AlreadyExists("Requested entity already exists.")
        return Aborted("The operation was aborted.")
    return injected_error(status, project_number)


def _error_info(reason: str, domain: str, metadata: dict[str, str]) -> dict[str, Any]:
    return {"@type": _ERROR_INFO, "reason": reason, "domain": domain, "metadata": metadata}


def _permission_denied(reason: str, method: str, project: str, resource: str,
                       number: str) -> PermissionDenied:
    if reason == "SERVICE_DISABLED":
        url = f"https://console.developers.google.com/apis/api/{SERVICE}/overview?project={number}"
        message = (f"Vertex AI API has not been used in project {number} before or it is "
                   f"disabled. Enable it by visiting {url} then retry. If you enabled this API "
                   f"recently, wait a few minutes for the action to propagate to our systems "
                   f"and retry.")
        return PermissionDenied(message, details=[
            _error_info(reason, "googleapis.com",
                        {"consumer": f"projects/{number}", "service": SERVICE,
                         "serviceTitle": "Vertex AI API", "containerInfo": number,
                         "activationUrl": url}),
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
             "message": message},
            {"@type": "type.googleapis.com/google.rpc.Help",
             "links": [{"description": "Google developers console API activation",
                        "url": url}]},
        ])
    if reason == "BILLING_DISABLED":
        url = f"https://console.developers.google.com/billing/enable?project={number}"
        return PermissionDenied(
            f"This API method requires billing to be enabled. Please enable billing on project "
            f"#{number} by visiting {url} then retry. If you enabled billing for this project "
            f"recently, wait a few minutes for the action to propagate to our systems and "
            f"retry.",
            details=[
                _error_info(reason, "googleapis.com",
                            {"consumer": f"projects/{number}", "service": SERVICE}),
                {"@type": "type.googleapis.com/google.rpc.Help",
                 "links": [{"description": "Google developers console billing", "url": url}]},
            ])
    if reason == "CONSUMER_INVALID":
        return PermissionDenied(f"Permission denied on resource project {project}.", details=[
            _error_info(reason, "googleapis.com",
                        {"consumer": f"projects/{project}", "service": SERVICE})])
    permission = f"aiplatform.tuningJobs.{method}"
    return PermissionDenied(
        f"Permission '{permission}' denied on resource '//{SERVICE}/{resource}' "
        f"(or it may not exist).",
        details=[_error_info(reason, SERVICE, {"permission": permission, "resource": resource})])
