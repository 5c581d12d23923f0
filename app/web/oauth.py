"""`GET /oauth/callback`: amoCRM's redirect after consent; exchanges the code (jobs/tokens.py)."""

from __future__ import annotations

from flask import Blueprint, current_app, request
from markupsafe import escape

from integrations.amocrm.errors import ReauthorizationRequired

oauth_bp = Blueprint("oauth", __name__)


@oauth_bp.get("/oauth/callback")
def callback() -> tuple[str, int]:
    from jobs import tokens

    if request.args.get("error"):
        return "Access was not granted in amoCRM.", 400
    code, state = request.args.get("code", ""), request.args.get("state", "")
    runtime = current_app.extensions["amoscore.runtime"]
    try:
        account = runtime.account(int(state.split(".", 1)[0]))
    except (ValueError, KeyError):
        return "Unknown or malformed state.", 400
    if not code or not tokens.check_state(account, state):
        return ("Invalid or expired state, or no code: open a new link of "
                "`amoscore oauth connect`."), 400
    own = f"{account.account.subdomain}.{account.account.base_domain}"
    referer = request.args.get("referer", "")
    # amoCRM's redirect always names the account consent was given in (amocrm-api.md §3); one
    # without it was not made by amoCRM.
    if not referer:
        return ("The redirect names no amoCRM account (referer): open a new link of "
                "`amoscore oauth connect`."), 400
    if referer.lower() != own:
        # Consent given in another amoCRM account than the one the link was made for: its code
        # must not be stored (or reported connected) as this account's.
        return (f"This consent came from {escape(referer)}, but the link was made for {own}. "
                f"Open the link of `amoscore oauth connect` while signed in to {own}."), 400
    if not tokens.spend_state(runtime.redis, state):
        return "This link was used already: open a new link of `amoscore oauth connect`.", 400
    try:
        tokens.connect_with_code(account, runtime.sessions, code)
    except ReauthorizationRequired:
        return "amoCRM refused the code; start again with `amoscore oauth connect`.", 400
    return "amoCRM account connected. You can close this page.", 200
