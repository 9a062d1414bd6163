from lucidgrant.cache import Cache


def grant(name="g", rv="5", consumer="tok", generation=1):
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": rv,
            "generation": generation,
        },
        "spec": {
            "clientSecretRef": {"name": "client"},
            "scopes": ["a"],
            "authorization": {"refreshTokenSecretRef": {"name": "boot"}},
            "accessTokenSecret": {"name": consumer},
        },
    }


def secret(name, rv, role="client"):
    """A Secret the operator's watch selects (labelled lucidgrant.dev/role), unless role=None."""
    labels = {"lucidgrant.dev/role": role} if role else {}
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv, "labels": labels}}


def test_only_referenced_secrets_are_kept_and_older_versions_never_win():
    cache = Cache()
    cache.observe_grant(grant())
    assert not cache.observe_secret(secret("unrelated", "1"))
    assert cache.observe_secret(secret("client", "7"))
    cache.observe_secret(secret("client", "6"))  # a late watch event
    kept = cache.secret(("ns", "client"))[1]
    assert kept is not None and kept["metadata"]["resourceVersion"] == "7"
    assert cache.observe_secret(secret("g-lucidgrant-state", "8"))
    assert set(cache.grants_of_secret(secret("boot", "9"))) == {("ns", "g")}
    cache.observe_secret(secret("client", "10"), deleted=True)
    # Deleted, or it left the watch's selection (DELETED too): the next read asks.
    assert cache.secret(("ns", "client")) == (False, None)
    assert cache.observe_secret(secret("boot", "11", role=None))
    assert cache.secret(("ns", "boot")) == (False, None), "outside the selection: never kept"


def test_a_renamed_reference_drops_the_old_secret_and_forget_drops_all():
    cache = Cache()
    cache.observe_grant(grant())
    cache.observe_secret(secret("tok", "3"))
    cache.observe_grant(grant(rv="6", consumer="renamed", generation=2))
    assert cache.secret(("ns", "tok")) == (False, None)
    assert not cache.observe_secret(secret("tok", "4"))
    cache.forget_grant(("ns", "g"))
    assert not cache.observe_secret(secret("client", "11"))
    assert ("ns", "g") not in cache.grants


def test_spec_parsed_once_per_generation_and_errors_kept():
    cache = Cache()
    bad = grant()
    bad["spec"]["tokenKind"] = "bot"
    record = cache.observe_grant(bad)
    first = record.spec()
    assert isinstance(first, ValueError) and first.path == "spec.tokenKind"
    assert record.spec() is first


async def test_secrets_are_read_from_the_api_server_once_then_from_the_cache():
    from lucidgrant.cache import SecretReader
    from tests.core.fakes import FakeKube

    kube = FakeKube()
    cache = Cache()
    cache.observe_grant(grant())
    kube.put("/api/v1/namespaces/ns/secrets/client", secret("client", "1"))
    reader = SecretReader(cache, kube)
    first = await reader.get("ns", "client")
    assert (
        first is not None and await reader.get("ns", "client") == cache.secret(("ns", "client"))[1]
    )
    assert await reader.get("ns", "boot") is None
    assert await reader.get("ns", "boot") is None, "absence is remembered too"
    kube.put("/api/v1/namespaces/ns/secrets/tok", {**secret("tok", "2", role=None), "data": {}})
    for _ in range(2):
        unmarked = await reader.get("ns", "tok")
        assert unmarked is not None and "data" not in unmarked, "values not held"
    assert [(c[0], c[1].rsplit("/", 1)[1]) for c in kube.calls] == [
        ("GET metadata", "client"),
        ("GET", "client"),  # labelled: read whole once, then the watch keeps it
        ("GET metadata", "boot"),
        # Outside the watch's selection: its metadata each time (no event would update it),
        # and never its values.
        ("GET metadata", "tok"),
        ("GET metadata", "tok"),
    ]


def test_a_relist_finds_what_a_watch_gap_hid_but_not_what_came_after_it():
    cache = Cache()
    cache.observe_grant(grant(rv="5"))
    cache.observe_secret(secret("client", "7"))
    cache.observe_secret(secret("tok", "12"))  # written after the list's resourceVersion 10
    listed: set[tuple[str, str]] = set()
    gone = cache.secrets_gone("ns", listed, 10)
    assert [s["metadata"]["name"] for s in gone] == ["client"]
    assert cache.secrets_gone("other", listed, 10) == []
    assert cache.secrets_gone("ns", {("ns", "client")}, 10) == []
    assert [g["metadata"]["name"] for g in cache.grants_gone("ns", listed, 10)] == ["g"]
    assert cache.grants_gone("ns", listed, 4) == [], "the grant came after the list"
    assert cache.secret_changed(secret("client", "8"))
    assert not cache.secret_changed(secret("client", "7"))
    assert not cache.secret_changed(secret("never-read", "1"))
    assert cache.grant_changed(grant(name="new"))
    assert not cache.grant_changed(grant(rv="5"))
