"""Routes under /accounts/ for organisation sign-in, mounted by portal/urls.py before Django's own."""

from django.urls import path

from . import oidc, signin

urlpatterns = [
    path("login/", signin.SignInView.as_view(), name="login"),
    path("logout/", oidc.sign_out, name="logout"),
    path("confirm/", signin.confirm, name="confirm-sign-in"),
    path("oidc/start/", oidc.StartView.as_view(), name="oidc-start"),
    path("oidc/callback/", oidc.CallbackView.as_view(), name="oidc-callback"),
]
