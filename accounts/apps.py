from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts: API tokens and sessions"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_logged_out

        from accounts import checks, services  # noqa: F401  (checks register themselves)

        user_logged_in.connect(services.record_session_start, dispatch_uid="accounts.login")
        user_logged_out.connect(services.record_session_end, dispatch_uid="accounts.logout")
