from django.urls import path

from accounts import views

urlpatterns = [
    path("account/security/", views.security, name="account-security"),
    path("account/security/tokens/", views.token_create, name="account-token-create"),
    path(
        "account/security/tokens/<int:pk>/revoke/",
        views.token_revoke,
        name="account-token-revoke",
    ),
    path(
        "account/security/sessions/sign-out-others/",
        views.sign_out_other_sessions,
        name="account-sign-out-others",
    ),
]
