"""The service registry: the checked-in files, every kind of invalid file, and Service's helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from notify_pipeline.registry import (
    Environment,
    Registry,
    RegistryError,
    RegistryIssue,
    Service,
    load_registry,
    render_schema,
    validate_registry,
)

REGISTRY = Path(__file__).resolve().parent.parent / "registry"
MAIN, TESTING = "notify.example.org", "email-testing.notify.example.org"


def service_data(service_id: str = "svc", **fields: Any) -> dict[str, Any]:
    """A valid registry file's contents, with `fields` overriding or adding keys."""
    data: dict[str, Any] = {
        "id": service_id,
        "display_name": "A Service",
        "local_part": service_id,
        "technical_contacts": ["team@example.org"],
        "service_accounts": ["svc@svc-prod-1234.iam.gserviceaccount.com"],
        "environment": "production",
    }
    return {**data, **fields}


def write(directory: Path, name: str, data: Any) -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def only_issue(directory: Path) -> RegistryIssue:
    issues = validate_registry(directory)
    assert len(issues) == 1, issues
    return issues[0]


# The checked-in registry


def test_checked_in_registry_loads() -> None:
    registry = load_registry(REGISTRY)

    assert list(registry) == ["hr-reminders", "lookup-notices", "lookup-notices-test",
                              "notify-alerts"]
    lookup = registry["lookup-notices"]
    assert lookup.environment is Environment.PRODUCTION
    assert lookup.advanced.reply_to
    assert lookup.allowed_recipients is None
    test = registry["lookup-notices-test"]
    assert test.environment is Environment.NON_PRODUCTION
    assert test.use_testing_domain
    assert test.allowed_recipients


def test_checked_in_schema_is_up_to_date() -> None:
    checked_in = (REGISTRY / "schema.json").read_text(encoding="utf-8")

    assert checked_in == render_schema(), (
        "registry/schema.json is stale: regenerate it with "
        "notify_pipeline.registry.write_schema(Path('registry/schema.json'))"
    )


def test_schema_describes_the_service_model() -> None:
    schema = yaml.safe_load(render_schema())  # JSON is YAML

    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["additionalProperties"] is False
    assert schema["properties"]["allowed_recipients"]["type"] == "array"
    assert "environment" in schema["required"]


# One issue per problem, naming file, field and reason


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"id": "Bad_Id"}, "id", "lower-case letters, digits and '-'"),
        ({"id": "svc-"}, "id", "not starting or ending with '-'"),
        ({"id": "svc\n"}, "id", "lower-case letters"),
        ({"id": 42}, "id", "must be a string"),
        ({"display_name": "Evil\r\nBcc: x@example.org"}, "display_name", "one line"),
        ({"display_name": "x" * 101}, "display_name", "at most 100 characters"),
        ({"local_part": "svc+tag"}, "local_part", "'+' is reserved for tags"),
        ({"local_part": "a..b"}, "local_part", "single dots"),
        ({"technical_contacts": []}, "technical_contacts", "at least one address is required"),
        ({"technical_contacts": ["not-an-address"]}, "technical_contacts[0]", "not a valid email"),
        ({"service_accounts": "svc@p.iam.gserviceaccount.com"}, "service_accounts", "a list"),
        ({"environment": "staging"}, "environment", "'production' or 'non-production'"),
        ({"allowed_recipients": []}, "allowed_recipients", "at least one address"),
        ({"allowed_recipients": None}, "allowed_recipients", "remove the field"),
        ({"use_testing_domain": "yes"}, "use_testing_domain", "true or false"),
        ({"reporting_principals": ["analysts"]}, "reporting_principals[0]", "'group:EMAIL'"),
        ({"colour": "blue"}, "colour", "not a known field"),
        ({"advanced": {"reply_to": 1}}, "advanced.reply_to", "true or false"),
        ({"advanced": {"smpt": True}}, "advanced.smpt", "not a known field"),
        ({"advanced": {"custom_domains": ["Mail.Example"]}}, "advanced.custom_domains[0]", "DNS"),
        ({"advanced": {"bounce_forwarding": ["x@"]}}, "advanced.bounce_forwarding[0]", "email"),
        ({"advanced": None}, "advanced", "must be a mapping"),
        ({"advanced": {"dedicated_ip_pool": "p" * 53}}, "advanced.dedicated_ip_pool", "1-52"),
        ({"limits": {"per_minute": 0}}, "limits.per_minute", "greater than or equal to 1"),
        ({"limits": {"per_day": "100"}}, "limits.per_day", "integer"),
        ({"limits": {"per_hour": 5}}, "limits.per_hour", "not a known field"),
    ],
)
def test_invalid_field_is_reported(
    tmp_path: Path, fields: dict[str, Any], field: str, reason: str
) -> None:
    path = write(tmp_path, "svc.yaml", service_data(**fields))

    issue = only_issue(tmp_path)

    assert (issue.file, issue.field) == (str(path), field)
    assert reason in issue.reason
    assert "Traceback" not in str(issue)


def test_missing_field_is_reported(tmp_path: Path) -> None:
    data = service_data()
    del data["environment"]
    path = write(tmp_path, "svc.yaml", data)

    assert str(only_issue(tmp_path)) == f"{path}: environment: is required"


def test_list_of_invalid_addresses_reports_each_address_only(tmp_path: Path) -> None:
    write(tmp_path, "svc.yaml", service_data(technical_contacts=["a", "b@localhost"]))

    fields = [issue.field for issue in validate_registry(tmp_path)]

    assert fields == ["technical_contacts[0]", "technical_contacts[1]"]


def test_file_name_must_match_id(tmp_path: Path) -> None:
    path = write(tmp_path, "other.yaml", service_data("svc"))

    issue = only_issue(tmp_path)

    assert (issue.file, issue.field) == (str(path), "id")
    assert "svc.yaml" in issue.reason


def test_duplicate_id_is_reported(tmp_path: Path) -> None:
    first = write(tmp_path, "svc.yaml", service_data("svc"))
    second = write(tmp_path, "svc.yml", service_data("svc", local_part="other"))

    issue = only_issue(tmp_path)

    assert (issue.file, issue.field) == (str(second), "id")
    assert str(first) in issue.reason


def test_same_from_address_on_the_same_domain_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "alpha.yaml", service_data("alpha", local_part="news"))
    beta = write(tmp_path, "beta.yaml", service_data("beta", local_part="news"))

    issue = only_issue(tmp_path)

    assert (issue.file, issue.field) == (str(beta), "local_part")
    assert "'alpha'" in issue.reason


def test_same_local_part_on_different_domains_is_allowed(tmp_path: Path) -> None:
    write(tmp_path, "alpha.yaml", service_data("alpha", local_part="news"))
    write(tmp_path, "beta.yaml", service_data("beta", local_part="news", use_testing_domain=True))

    assert validate_registry(tmp_path) == []


def test_same_local_part_on_a_custom_domain_both_list_is_reported(tmp_path: Path) -> None:
    shared = {"custom_domains": ["mail.example.com"]}
    write(tmp_path, "alpha.yaml", service_data("alpha", local_part="news", advanced=shared))
    beta = write(tmp_path, "beta.yaml", service_data(
        "beta", local_part="news", use_testing_domain=True, advanced=shared))

    issue = only_issue(tmp_path)

    assert (issue.file, issue.field) == (str(beta), "local_part")
    assert "mail.example.com" in issue.reason and "'alpha'" in issue.reason


def test_a_custom_domain_shared_under_other_local_parts_is_allowed(tmp_path: Path) -> None:
    shared = {"custom_domains": ["mail.example.com"]}
    write(tmp_path, "alpha.yaml", service_data("alpha", local_part="news", advanced=shared))
    write(tmp_path, "beta.yaml", service_data("beta", local_part="alerts", advanced=shared))

    assert validate_registry(tmp_path) == []


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "svc.yaml", "id: svc\ndisplay_name: [unclosed\nlocal_part: svc\n")

    issue = only_issue(tmp_path)

    assert issue.file == str(path)
    assert issue.reason.startswith("invalid YAML at line 3")


def test_duplicate_yaml_key_is_reported(tmp_path: Path) -> None:
    text = yaml.safe_dump(service_data()) + "service_accounts: [x@p-1.iam.gserviceaccount.com]\n"
    write(tmp_path, "svc.yaml", text)

    assert "duplicate key 'service_accounts'" in only_issue(tmp_path).reason


@pytest.mark.parametrize(("text", "found"), [("", "nothing"), ("- a\n- b\n", "a list")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    write(tmp_path, "svc.yaml", text)

    assert only_issue(tmp_path).reason == f"must be a mapping of fields, found {found}"


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "schema.json", "{}")
    write(tmp_path, "notes.txt", "not a service")

    expected = RegistryIssue(str(tmp_path), "", "no service files (*.yaml) found")
    assert only_issue(tmp_path) == expected


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    assert str(only_issue(missing)) == f"{missing}: registry directory not found"


def test_subdirectories_are_not_read(tmp_path: Path) -> None:
    write(tmp_path, "svc.yaml", service_data())
    (tmp_path / "drafts").mkdir()
    write(tmp_path / "drafts", "bad.yaml", "{")

    assert validate_registry(tmp_path) == []


# The registry as a whole


def test_every_issue_in_every_file_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", service_data("a", id="A", colour="blue"))
    write(tmp_path, "b.yaml", "id: [b\n")
    write(tmp_path, "c.yaml", service_data("c", technical_contacts=[]))

    found = {(Path(issue.file).name, issue.field) for issue in validate_registry(tmp_path)}

    assert found == {
        ("a.yaml", "id"),
        ("a.yaml", "colour"),
        ("b.yaml", ""),
        ("c.yaml", "technical_contacts"),
    }


def test_one_bad_file_refuses_the_whole_registry(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", service_data("good"))
    write(tmp_path, "also-good.yaml", service_data("also-good"))
    bad = write(tmp_path, "bad.yaml", service_data("bad", environment="prod"))

    with pytest.raises(RegistryError) as raised:
        load_registry(tmp_path)

    assert [issue.file for issue in raised.value.issues] == [str(bad)]
    assert str(raised.value) == str(raised.value.issues[0])


def test_registry_error_lists_one_issue_per_line() -> None:
    issues = [RegistryIssue("r/a.yaml", "id", "bad"), RegistryIssue("r/b.yaml", "", "empty")]

    assert str(RegistryError(issues)) == "r/a.yaml: id: bad\nr/b.yaml: empty"


def test_registry_is_an_immutable_mapping_sorted_by_id(tmp_path: Path) -> None:
    for service_id in ("zeta", "alpha"):
        write(tmp_path, f"{service_id}.yaml", service_data(service_id))

    registry = load_registry(tmp_path)

    assert [s.id for s in registry.services] == ["alpha", "zeta"]
    assert "alpha" in registry and "beta" not in registry
    assert registry.get("beta") is None
    assert len(registry) == 2
    with pytest.raises(TypeError):
        registry["beta"] = registry["alpha"]  # type: ignore[index]


def test_registry_refuses_duplicate_ids() -> None:
    service = Service.model_validate(service_data())

    with pytest.raises(ValueError, match="duplicate service id 'svc'"):
        Registry([service, service])


# Service helpers


@pytest.fixture
def service() -> Service:
    return Service.model_validate(
        service_data(
            local_part="news",
            allowed_recipients=["Alice@Example.org", "bob@example.org"],
            service_accounts=["sender@svc-prod-1234.iam.gserviceaccount.com"],
        )
    )


def test_from_address_without_tag(service: Service) -> None:
    assert service.from_address(domain=MAIN, tag=None) == "news@notify.example.org"


def test_from_address_with_tag(service: Service) -> None:
    assert service.from_address(domain=MAIN, tag="weekly.digest") == "news+weekly.digest@" + MAIN


@pytest.mark.parametrize("tag", ["", "Upper", "with space", "a+b", "x" * 65, "ends.", "a..b"])
def test_from_address_refuses_bad_tags(service: Service, tag: str) -> None:
    with pytest.raises(ValueError, match="tag"):
        service.from_address(domain=MAIN, tag=tag)


def test_from_address_refuses_a_tag_that_makes_the_local_part_too_long() -> None:
    service = Service.model_validate(service_data(local_part="x" * 60))

    with pytest.raises(ValueError, match="invalid address local part"):
        service.from_address(domain=MAIN, tag="long")


def test_sending_domain_follows_use_testing_domain(service: Service) -> None:
    testing = service.model_copy(update={"use_testing_domain": True})

    assert service.sending_domain(MAIN, TESTING) == MAIN
    assert testing.sending_domain(MAIN, TESTING) == TESTING


def test_allows_recipient_compares_domains_case_blind_and_local_parts_as_written(
    service: Service,
) -> None:
    assert service.allows_recipient("Alice@example.ORG")
    assert service.allows_recipient("bob@EXAMPLE.org")
    assert not service.allows_recipient("alice@example.org"), "only Alice is listed"
    assert not service.allows_recipient("BOB@example.org"), "only bob is listed"
    assert not service.allows_recipient("mallory@example.org")


def test_no_allow_list_allows_anyone() -> None:
    assert Service.model_validate(service_data()).allows_recipient("anyone@example.net")


def test_allows_service_account_is_case_insensitive(service: Service) -> None:
    assert service.allows_service_account("Sender@svc-prod-1234.iam.gserviceaccount.com")
    assert not service.allows_service_account("other@svc-prod-1234.iam.gserviceaccount.com")


def test_services_are_frozen(service: Service) -> None:
    with pytest.raises(ValueError, match="frozen"):
        service.local_part = "other"  # type: ignore[misc]


def test_limits_are_optional_and_read_as_written(tmp_path: Path) -> None:
    write(tmp_path, "svc.yaml", service_data(limits={"per_minute": 60}))
    [service] = load_registry(tmp_path).services
    assert (service.limits.per_minute, service.limits.per_day) == (60, None)
