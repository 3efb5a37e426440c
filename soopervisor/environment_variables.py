"""Every environment variable soopervisor reads or sets, with its meaning.

The documentation's configuration reference is generated from this table, and
tests/test_docs.py checks that every ``SOOPERVISOR_*`` name in the code is here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    name: str
    meaning: str
    default: str = ""
    #: "settings", "cloud credentials", "endpoints", "read from the environment", "inside the container"
    group: str = "settings"


ENVIRONMENT_VARIABLES = (
    EnvVar("SOOPERVISOR_HOME", "the folder of all soopervisor's state: run history, logs, caches, unsaved sets",
           "the platform's user data folder (``~/.local/share/soopervisor`` on Linux)"),
    EnvVar("SOOPERVISOR_STORAGE", "where artifacts are stored and read: a folder or a storage URL "
           "(``s3://``, ``gdrive://``, ``dropbox://``, ``onedrive://``, ``box://``); ``--storage`` wins",
           "``$SOOPERVISOR_HOME/artifacts``"),
    EnvVar("SOOPERVISOR_IMAGE", "the base image of runs; ``--image`` wins (``soopervisor image show`` says which "
           "one a run would use)",
           "``python:3.11-slim`` (``soopervisor/base:bookworm`` when that cannot be pulled and exists)"),
    EnvVar("SOOPERVISOR_DEBIAN_MIRROR", "the Debian mirror ``soopervisor image build`` builds the offline base "
           "image from; ``--mirror`` wins", "``http://deb.debian.org/debian``"),
    EnvVar("SOOPERVISOR_NETWORK", "the network of the pipeline stage: ``default``, ``none``, ``host``, "
           "``bridge`` or a Docker network name; ``--network`` wins", "``default``"),
    EnvVar("SOOPERVISOR_FORCE", "``1``/``true``/``yes``: every run rebuilds every task (``ploomber build "
           "--force``); ``0``/``false``/``no``: a run starts from the set of the nearest ancestor commit and "
           "rebuilds only what changed (how-to: incremental runs); ``--force`` wins; another value is an error", "``false`` (incremental)"),
    EnvVar("SOOPERVISOR_PROJECT", "the project's name in storage, instead of the one taken from the "
           "repository's origin remote", "the origin remote's name, else the repository folder's"),
    EnvVar("SOOPERVISOR_CACHE_MAX_SIZE", "after each environment build, prune the least recently used "
           "environment images down to this size (``20g``, ``500m``)", "no limit"),
    EnvVar("SOOPERVISOR_INSTALLER", "what fills a run's environment: ``auto`` (uv, and pip when uv cannot be "
           "installed or fails, said in the log), ``uv`` (uv only) or ``pip`` (pip only); part of the environment's "
           "cache key", "``auto``"),
    EnvVar("SOOPERVISOR_DOWNLOAD_CACHE", "the download cache of environment builds (a Docker volume, never seen "
           "by a pipeline run): ``repository`` (one per repository), ``machine`` (one for every repository on this "
           "machine) or ``off``; ``soopervisor cache downloads`` lists them", "``repository``"),
    EnvVar("SOOPERVISOR_LEASE_SECONDS", "how long a run's owner lease lasts; it is renewed every third of it, "
           "and a run whose lease ran out on another machine is marked interrupted", "30"),
    EnvVar("SOOPERVISOR_CONFIG_DIR", "where credentials go when there is no system keyring (a 0600 file)",
           "the platform's user config folder"),
    EnvVar("SOOPERVISOR_EXECUTORS", "the executors file: the named engines runs can go to (how-to: remote "
           "engines)", "``executors.yaml`` in ``SOOPERVISOR_CONFIG_DIR``"),
    EnvVar("SOOPERVISOR_EXECUTOR", "the engine runs go to, by its name in the executors file; ``--executor`` "
           "wins; ``local`` is DOCKER_HOST's engine", "the file's ``default``, else ``local``"),
    EnvVar("SOOPERVISOR_REMOTES", "the remotes file: the team servers and GitHub workflows runs can go to with "
           "``--remote`` (how-to: remote runs); tokens are never in it", "``remotes.yaml`` in ``SOOPERVISOR_CONFIG_DIR``"),
    EnvVar("SOOPERVISOR_REMOTE_<NAME>_TOKEN", "the token of the remote NAME (upper case, other characters as "
           "``_``: ``TEAM_CI`` in place of ``<NAME>`` for ``team-ci``); wins over the stored one",
           "what ``soopervisor remote add`` stored", "cloud credentials"),
    EnvVar("SOOPERVISOR_NO_KEYRING", "any value: never use the system keyring, keep credentials in the file"),
    EnvVar("SOOPERVISOR_SERVER_CONFIG", "the server's configuration file, when ``soopervisor serve`` gets no "
           "``--config`` (the server image sets it to ``/etc/soopervisor/server.yaml``)",
           "none: no repositories, local storage"),
    EnvVar("SOOPERVISOR_SERVE_HOST", "the address ``soopervisor serve``'s HTTP API listens on, when it gets no "
           "``--host`` (``0.0.0.0`` in a container; without TLS tokens then cross the network in clear: put a "
           "reverse proxy in front)", "``127.0.0.1``"),
    EnvVar("SOOPERVISOR_SERVE_PORT", "the port ``soopervisor serve``'s HTTP API listens on, when it gets no "
           "``--port`` (``0``: a free one, printed)", "``8008``"),
    EnvVar("SOOPERVISOR_DOCS_URL", "the documentation site that error messages link to (a mirror, a local build)",
           "``https://soopervisor.github.io/soopervisor``"),
    EnvVar("SOOPERVISOR_GDRIVE_CLIENT_ID", "your Google OAuth client's id", group="cloud credentials"),
    EnvVar("SOOPERVISOR_GDRIVE_CLIENT_SECRET", "your Google OAuth client's secret", group="cloud credentials"),
    EnvVar("SOOPERVISOR_GDRIVE_REFRESH_TOKEN", "a Google Drive refresh token (the Google Drive how-to says how "
           "to get one for CI)", group="cloud credentials"),
    EnvVar("SOOPERVISOR_DROPBOX_APP_KEY", "your Dropbox app's key", group="cloud credentials"),
    EnvVar("SOOPERVISOR_DROPBOX_APP_SECRET", "your Dropbox app's secret (only for tokens issued without PKCE)",
           group="cloud credentials"),
    EnvVar("SOOPERVISOR_DROPBOX_REFRESH_TOKEN", "a Dropbox refresh token", group="cloud credentials"),
    EnvVar("SOOPERVISOR_ONEDRIVE_CLIENT_ID", "your Microsoft app registration's client id",
           group="cloud credentials"),
    EnvVar("SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN", "a OneDrive refresh token of CI's own "
           "(``soopervisor login onedrive --ci``)", group="cloud credentials"),
    EnvVar("SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN_ISSUED", "the day that refresh token was issued (``YYYY-MM-DD``, "
           "printed by ``login onedrive --ci``): a run warns from day 80 of its 90", group="cloud credentials"),
    EnvVar("SOOPERVISOR_BOX_CLIENT_ID", "your Box app's client id", group="cloud credentials"),
    EnvVar("SOOPERVISOR_BOX_CLIENT_SECRET", "your Box app's client secret", group="cloud credentials"),
    EnvVar("SOOPERVISOR_BOX_REFRESH_TOKEN", "a Box refresh token (single use: each refresh returns a new one)",
           group="cloud credentials"),
    EnvVar("SOOPERVISOR_BOX_SUBJECT_TYPE", "with the client id and secret: Box's client-credentials grant "
           "instead of a refresh token, as ``enterprise`` (the app's service account) or ``user``",
           group="cloud credentials"),
    EnvVar("SOOPERVISOR_BOX_SUBJECT_ID", "the enterprise's or user's id for the client-credentials grant",
           group="cloud credentials"),
    EnvVar("SOOPERVISOR_BOX_DEVELOPER_TOKEN", "a Box developer token (valid 60 minutes), instead of the three above",
           group="cloud credentials"),
    EnvVar("SOOPERVISOR_GDRIVE_API_URL", "the Drive API's address (private deployments, tests)",
           "``https://www.googleapis.com``", group="endpoints"),
    EnvVar("SOOPERVISOR_GDRIVE_AUTH_URL", "Google's OAuth authorization address", "Google's", group="endpoints"),
    EnvVar("SOOPERVISOR_GDRIVE_TOKEN_URL", "Google's OAuth token address", "Google's", group="endpoints"),
    EnvVar("SOOPERVISOR_GRAPH_URL", "the Microsoft Graph address (sovereign clouds, tests)",
           "``https://graph.microsoft.com/v1.0``", group="endpoints"),
    EnvVar("SOOPERVISOR_ONEDRIVE_AUTHORITY", "who signs in to OneDrive: ``consumers`` (personal accounts), "
           "``organizations``, ``common``, a tenant id or domain, or an https URL", "``consumers``",
           group="endpoints"),
    EnvVar("DOCKER_HOST", "the Docker engine of the ``local`` executor, read as the docker CLI reads it, with "
           "``DOCKER_TLS_VERIFY`` (any value: TLS with client certificates) and ``DOCKER_CERT_PATH`` (the folder of "
           "``ca.pem``, ``cert.pem``, ``key.pem``)", "the local socket", group="read from the environment"),
    EnvVar("ENTRY_POINT", "the pipeline's entry point, as for ``ploomber build``; ``--entry-point`` wins",
           group="read from the environment"),
    EnvVar("SSL_CERT_FILE", "a CA bundle (also ``REQUESTS_CA_BUNDLE``, ``PIP_CERT``) mounted into the "
           "container for pip behind a proxy; ``--ca-bundle`` wins", group="read from the environment"),
    EnvVar("AWS_ENDPOINT_URL", "S3: the endpoint (``AWS_ENDPOINT_URL_S3`` first); also ``AWS_REGION``, "
           "``AWS_DEFAULT_REGION``, ``AWS_PROFILE``, ``AWS_MAX_ATTEMPTS`` (5), ``AWS_RETRY_MODE`` (adaptive) and "
           "botocore's credential chain", group="read from the environment"),
    EnvVar("GITHUB_API_URL", "the GitHub API the Action calls (set by the runner; GitHub Enterprise Server)",
           "``https://api.github.com``", group="read from the environment"),
    EnvVar("PGPASSWORD", "``soopervisor serve`` with a ``postgresql://`` database: the role's password, read by "
           "libpq (also ``PGPASSFILE``, ``~/.pgpass`` and libpq's other ``PG*`` variables); or "
           "``database_password: {env: NAME}`` in server.yaml", group="read from the environment"),
    EnvVar("SOOPERVISOR_COMMIT", "the full SHA of the commit that runs", group="inside the container"),
    EnvVar("SOOPERVISOR_DIRTY", "``true`` when the working tree had uncommitted changes (left out), else ``false``",
           group="inside the container"),
    EnvVar("SOOPERVISOR_MODE", "``sample`` or ``full``", group="inside the container"),
    EnvVar("SOOPERVISOR_RUN_ID", "the run's id", group="inside the container"),
    EnvVar("SOOPERVISOR_TASK_EVENTS", "a per-run nonce the build stage's runner marks its task events with; "
           "removed from the environment before the pipeline's code is imported, so tasks do not see it",
           group="inside the container"),
)

#: names that look like settings but are not variables (a heredoc delimiter of the script)
NOT_VARIABLES = ("SOOPERVISOR_REQUIREMENTS",)
