"""Schemathesis hooks for syncline (loaded by tools/schemathesis/run).

Every request carries the credential its operation's security scheme asks for, so the
handlers behind authentication are exercised; the tokens and ids come from the hub the
run script seeded (ST_* environment variables). Path parameters, the ALLIO webhook's
`uuid`, the feed's cursor and the Ergonode token are sometimes replaced by valid ones,
so generated requests also reach past the lookups that random values never pass.
"""

import base64
import hashlib
import hmac
import json
import os
import time

import schemathesis
from hypothesis import strategies as st

ENV = os.environ

# Bearer token per security scheme of the OpenAPI document.
TOKENS = {
    "AdminAuth": ENV["ST_ADMIN_TOKEN"],
    "ImshopAuth": ENV["ST_IMSHOP_TOKEN"],
    "CcUserAuth": ENV["ST_CC_USER_TOKEN"],
    "FeedAuth": ENV["ST_FEED_TOKEN"],
    "PartnerAuth": ENV["ST_FEED_TOKEN"],
}

ERGONODE_EVENTS = [
    f"{kind}_{action}"
    for kind in ("product", "category", "attribute")
    for action in ("created", "updated", "deleted")
] + ["synchronization_started", "synchronization_ended"]


def valid_path_values(path, name):
    """Values of a path parameter that name something the seeded hub has."""
    if name == "tenant_id":
        return [ENV["ST_TENANT_ID"]]
    if name == "integration_id" and path.startswith("/ergonode/"):
        return [ENV["ST_ERGONODE_ID"]]
    if name == "integration_id":
        # Admin routes get integrations of their own: settings they overwrite must not
        # break the ones partner routes are exercised with.
        return ENV["ST_ADMIN_INTEGRATION_IDS"].split(",")
    if name == "event":
        return ERGONODE_EVENTS
    if name == "token":
        return [ENV["ST_ALLIO_TOKEN"]]
    if name == "source_id":
        return [ENV["ST_SOURCE_ID"]]
    if name == "user_id":
        return [ENV["ST_USER_ID"]]
    if name == "webhook_id":
        return [ENV["ST_WEBHOOK_ID"]]
    if name == "id":
        return [ENV["ST_JOB_ID"]]
    return []


@schemathesis.hook
def flatmap_path_parameters(ctx, path_parameters):
    if not path_parameters:
        return st.just(path_parameters)
    choices = {}
    for name, value in path_parameters.items():
        valid = valid_path_values(ctx.operation.path, name)
        choices[name] = st.sampled_from([value] + valid) if valid else st.just(value)
    return st.fixed_dictionaries(choices)


def ergonode_token():
    """An X-APP-TOKEN signed with the seeded integration's secret, valid for an hour."""

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {
        "exp": int(time.time()) + 3600,
        "synchronization_id": "2f7a4c1e-0b3d-4e5f-9a8b-7c6d5e4f3a2b",
    }
    signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(ENV["ST_ERGONODE_SECRET"].encode(), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64(mac.digest())}"


@schemathesis.hook
def flatmap_headers(ctx, headers):
    if "X-APP-TOKEN" not in (headers or {}):
        return st.just(headers)
    return st.sampled_from([headers, {**headers, "X-APP-TOKEN": "valid"}])


@schemathesis.hook
def flatmap_body(ctx, body):
    path = ctx.operation.path
    if not isinstance(body, dict):
        return st.just(body)
    if path.startswith("/allio/webhook/"):
        return st.sampled_from([body, {**body, "uuid": ENV["ST_ALLIO_UUID"]}])
    if path.startswith("/v1/shop.") and isinstance(body.get("paging"), dict):
        paging = {**body["paging"], "after": ENV["ST_CURSOR"]}
        return st.sampled_from([body, {**body, "paging": paging}])
    return st.just(body)


@schemathesis.hook
def before_call(ctx, case, kwargs):
    operation = ctx.operation
    headers = dict(case.headers or {})
    for requirement in operation.definition.raw.get("security", []):
        for scheme in requirement:
            headers["Authorization"] = f"Bearer {TOKENS[scheme]}"
    # Signed now, not at generation time, so it has not expired when sent.
    if headers.get("X-APP-TOKEN") == "valid":
        headers["X-APP-TOKEN"] = ergonode_token()
    case.headers = headers
