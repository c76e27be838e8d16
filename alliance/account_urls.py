from django.urls import path

from alliance import account_views as views

app_name = "account"

urlpatterns = [
    path("", views.account, name="index"),
    path("password/", views.password, name="password"),
    path("two-factor/", views.two_factor, name="two_factor"),
    path("two-factor/recovery-codes/", views.recovery_codes, name="recovery_codes"),
    path("verify/", views.verify, name="verify"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token_revoke"),
]
