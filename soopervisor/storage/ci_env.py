"""The environment variables that carry each cloud service's credentials in CI.

One table, light to import: the backends read their credentials through it,
and ``soopervisor github init`` and the Action name the secrets a workflow
needs from it without loading any cloud SDK. A trailing ``?`` marks an
optional variable.
"""
from __future__ import annotations

#: service -> {credential field -> environment variable}
ENV: dict[str, dict[str, str]] = {
    "gdrive": {
        "client_id": "SOOPERVISOR_GDRIVE_CLIENT_ID",
        "client_secret": "SOOPERVISOR_GDRIVE_CLIENT_SECRET",
        "refresh_token": "SOOPERVISOR_GDRIVE_REFRESH_TOKEN",
    },
    "dropbox": {
        "app_key": "SOOPERVISOR_DROPBOX_APP_KEY",
        "refresh_token": "SOOPERVISOR_DROPBOX_REFRESH_TOKEN",
        "app_secret": "SOOPERVISOR_DROPBOX_APP_SECRET?",  # only for tokens issued without PKCE
    },
    "onedrive": {
        "client_id": "SOOPERVISOR_ONEDRIVE_CLIENT_ID",
        "refresh_token": "SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN",
    },
    "box": {
        "client_id": "SOOPERVISOR_BOX_CLIENT_ID",
        "client_secret": "SOOPERVISOR_BOX_CLIENT_SECRET",
        "refresh_token": "SOOPERVISOR_BOX_REFRESH_TOKEN",
    },
}

#: a developer token from Box's app console (60 minutes) stands in for the three above, for one-off jobs
BOX_DEVELOPER_TOKEN_ENV = "SOOPERVISOR_BOX_DEVELOPER_TOKEN"
#: Box's client-credentials grant (a Server Authentication app): with the client id and secret above,
#: these two stand in for the refresh token, so CI keeps no single-use token at all
BOX_SUBJECT_TYPE_ENV = "SOOPERVISOR_BOX_SUBJECT_TYPE"  # "enterprise" (the app's service account) or "user"
BOX_SUBJECT_ID_ENV = "SOOPERVISOR_BOX_SUBJECT_ID"  # the enterprise id, or the user id
