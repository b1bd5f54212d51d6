# Rendered by osunits for ctl01: keystone's readiness check (keystone.yaml).
# Exits 0 once keystone answers and holds what osunits-catalog.json lists: the service
# project, a service account per API (its password the current one, with the admin role
# on that project, as the APIs' keystone_authtoken and nova's placement and neutron
# clients need), and each API's service with its public and internal endpoints, which
# keystone-manage bootstrap does not make (it makes only identity's). Idempotent: it
# runs at every start, changes only what differs, and keystone is ready, so the APIs
# that require it start, only when their catalog entries exist. Python's stdlib only.
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

KEYSTONE = "http://127.0.0.1:5000/v3"
DOMAIN = "default"


def call(method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    req = urllib.request.Request(KEYSTONE + path, method=method, headers=headers,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            data = r.read()
            return r.status, r.headers, json.loads(data) if data else None
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace")


def must(method, path, body=None, token=None):
    status, _headers, data = call(method, path, body, token)
    if status >= 300:
        sys.exit(f"{method} {path}: {status} {data}")
    return data


def token_for(user, password, project=None):
    """A token (scoped to project, if any), or None if keystone refuses the password."""
    auth = {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": DOMAIN}, "password": password}}}}
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"id": DOMAIN}}}
    status, headers, data = call("POST", "/auth/tokens", {"auth": auth})
    if status == 401:
        return None
    if status != 201:
        sys.exit(f"POST /auth/tokens as {user}: {status} {data}")
    return headers["X-Subject-Token"]


def find(kind, token, **filters):
    """The one KIND (users, projects, ...) matching filters, or None."""
    found = must("GET", f"/{kind}?{urllib.parse.urlencode(filters)}", token=token)[kind]
    return found[0] if found else None


def ensure(kind, token, body, **filters):
    """The id of the KIND matching filters, created from body if there is none."""
    have = find(kind, token, **filters)
    if have is None:
        have = must("POST", f"/{kind}", {kind[:-1]: body}, token)[kind[:-1]]
        print(f"created {kind[:-1]} {body.get('name', body.get('url'))}")
    return have


def main():
    with open("/etc/keystone/osunits-catalog.json") as f:
        want = json.load(f)
    with open("/etc/keystone/osunits-admin-password") as f:
        admin_password = f.read().rstrip("\r\n")
    try:
        token = token_for("admin", admin_password, "admin")
    except urllib.error.URLError as e:  # not answering yet: the init tries again
        sys.exit(f"keystone at {KEYSTONE}: {e.reason}")
    if token is None:
        sys.exit("keystone refuses the admin password")
    project = ensure("projects", token, {"name": want["project"], "domain_id": DOMAIN},
                     name=want["project"], domain_id=DOMAIN)
    role = find("roles", token, name=want["role"])
    for name, password in sorted(want["users"].items()):
        user = ensure("users", token, {"name": name, "domain_id": DOMAIN,
                                       "password": password}, name=name, domain_id=DOMAIN)
        # a password changed in the secrets directory reaches keystone at the next start;
        # an unchanged one is left alone (a change revokes the account's tokens)
        if token_for(name, password) is None:
            must("PATCH", f"/users/{user['id']}", {"user": {"password": password}}, token)
            print(f"set the password of user {name}")
        must("PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{role['id']}",
             token=token)
    for svc in want["services"]:
        service = ensure("services", token, {"name": svc["name"], "type": svc["type"]},
                         name=svc["name"], type=svc["type"])
        for interface in ("public", "internal"):
            endpoint = ensure("endpoints", token, {
                "service_id": service["id"], "interface": interface,
                "region_id": want["region"], "url": svc["url"]},
                service_id=service["id"], interface=interface, region_id=want["region"])
            if endpoint["url"] != svc["url"]:
                must("PATCH", f"/endpoints/{endpoint['id']}", {"endpoint": {
                    "url": svc["url"]}}, token)
                print(f"moved the {interface} endpoint of {svc['name']} to {svc['url']}")


main()
