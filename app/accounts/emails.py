"""The texts of the emails the accounts module sends."""

from app.accounts.mail import Email


def verification(to: str, link: str, token: str, lifetime_seconds: int) -> Email:
    return Email(
        to=to,
        subject="Confirm your email address",
        text=f"Welcome to Storefront!\n\nConfirm your address by opening:\n{link}\n\n"
        f"or send this token to POST /v1/auth/verify-email:\n{token}\n\n"
        f"The link expires in {lifetime_seconds // 3600} hours.\n",
        secrets=(token,),
    )


def password_reset(to: str, link: str, token: str, lifetime_seconds: int) -> Email:
    return Email(
        to=to,
        subject="Reset your password",
        text=f"Someone asked to reset your Storefront password.\n\nChoose a new one at:\n{link}\n\n"
        f"or send this token to POST /v1/auth/password/reset:\n{token}\n\n"
        f"The link expires in {lifetime_seconds // 60} minutes. If it was not you, ignore this email.\n",
        secrets=(token,),
    )


def account_exists(to: str, base_url: str) -> Email:
    """Sent instead of an answer saying so, when someone registers with an address that has an
    account: the registration looks the same to the client, and only the owner learns of it."""
    return Email(
        to=to,
        subject="You already have a Storefront account",
        text="Someone, perhaps you, tried to create a Storefront account with this address, "
        "which already has one.\n\n"
        f"To sign in, use your password at {base_url}. If you forgot it, choose a new one with "
        "POST /v1/auth/password/forgot; if the address is not confirmed yet, ask for a new link "
        "with POST /v1/auth/verify-email/resend.\n\n"
        "If it was not you, ignore this email: nothing has changed.\n",
    )


def order_confirmation(to: str, order: dict) -> Email:
    """`order`: the payload of the order.placed event."""
    lines = "\n".join(
        f"  {item['quantity']} x {item['name']} ({item['sku']}) at {item['unitPrice']}: {item['lineTotal']}"
        for item in order.get("items") or ()
    )
    return Email(
        to=to,
        subject=f"Your Storefront order {order['orderId']} is confirmed",
        text=f"Thank you for your order.\n\nOrder {order['orderId']}\n{lines}\n\n"
        f"Total: {order['totalPrice']} {order['currency']} for {order['totalQuantity']} items.\n\n"
        "See it any time with GET /v1/orders/" + order["orderId"] + ".\n",
    )


def low_stock(to: str, product: dict) -> Email:
    """`product`: the payload of the product.low_stock event."""
    name = f"{product.get('name') or product['productId']} ({product.get('sku') or product['productId']})"
    return Email(
        to=to,
        subject=f"Low stock: {name}",
        text=f"Only {product['available']} units of {name} are available now, fewer than the "
        f"threshold of {product['threshold']} (LOW_STOCK_THRESHOLD).\n\n"
        f"Product {product['productId']}: restock with POST /v1/products/{product['productId']}/stock.\n",
    )
