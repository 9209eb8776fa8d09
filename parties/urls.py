from django.urls import path

from parties import credential_views, passkey_views, views

urlpatterns = [
    path("login/passkey/", passkey_views.passkey_sign_in, name="passkey-sign-in"),
    path("login/passkey/options/", passkey_views.sign_in_options, name="passkey-sign-in-options"),
    path("account/passkeys/", passkey_views.passkeys, name="passkeys"),
    path("account/passkeys/options/", passkey_views.passkey_options, name="passkey-options"),
    path("account/passkeys/register/", passkey_views.passkey_register, name="passkey-register"),
    path("account/passkeys/<int:pk>/remove/", passkey_views.passkey_remove, name="passkey-remove"),
    path(
        "organizations/<slug:org>/credentials/",
        credential_views.organization_credentials,
        name="organization-credentials",
    ),
    path(
        "organizations/<slug:org>/credentials/<int:pk>/remove/",
        credential_views.organization_credential_remove,
        name="organization-credential-remove",
    ),
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/new/", views.dataset_create, name="dataset-create"),
    path("datasets/schema/", views.schema_suggestion, name="dataset-schema"),
    path("datasets/<slug:org>/<slug:slug>/", views.dataset_detail, name="dataset-detail"),
    path(
        "datasets/<slug:org>/<slug:slug>/versions/new/", views.version_create, name="version-create"
    ),
    path("datasets/<slug:org>/<slug:slug>/policy/", views.policy_edit, name="policy-edit"),
]
