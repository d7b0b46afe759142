"""HTML pages: the profile and Profile > Integrations > Authorizations. Everything is scoped to request.user."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render

from .models import Token, TokenEvent


def home(request):
    return redirect("profile" if request.user.is_authenticated else "login")


@login_required
def profile(request):
    TokenEvent.record_expiries(Token.objects.for_user(request.user))
    events = TokenEvent.objects.for_user(request.user).select_related("token", "actor")
    page = Paginator(events, 25).get_page(request.GET.get("page"))
    return render(request, "profile/index.html", {"page": page})


@login_required
def token_list(request):
    tokens = Token.objects.for_user(request.user)
    page = Paginator(tokens, 25).get_page(request.GET.get("page"))
    return render(request, "tokens/token_list.html", {"page": page})
