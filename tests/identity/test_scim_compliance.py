"""The SCIM endpoint against a compliance checker nobody here wrote (scim2-tester), over real HTTP."""

import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server


@pytest.fixture
def checker_client(live_server, scim_token):
    http = httpx2.Client(
        base_url=f"{live_server.url}/scim/v2", headers={"Authorization": f"Bearer {scim_token}"}, timeout=30
    )
    yield SyncSCIMClient(http)
    http.close()


@pytest.mark.django_db(transaction=True)
def test_the_compliance_checker_reports_no_failure(checker_client):
    results = check_server(checker_client)
    failures = [r for r in results if r.status not in (Status.SUCCESS, Status.SKIPPED)]
    for r in results:
        print(r.status.name, r.title, r.reason or "", r.data if r.status != Status.SUCCESS else "")
    assert results
    assert not failures, "\n".join(f"{r.title}: {r.reason}" for r in failures)
