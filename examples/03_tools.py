"""Define internal-API tools as typed Python functions and a stateful Toolkit; call them like a model would.

Run: python examples/03_tools.py
"""

from typing import Literal

from agentft.errors import ToolError
from agentft.tools import Toolkit, tool


@tool(effect="read")
def get_exchange_rate(currency: Literal["EUR", "GBP", "JPY"]) -> dict:
    """Today's rate of a currency against USD.

    Args:
        currency: ISO code of the currency.
    """
    return {"currency": currency, "usd": {"EUR": 1.08, "GBP": 1.27, "JPY": 0.0067}[currency]}


class Payables(Toolkit):
    """A finance back-office: invoices live in per-episode state."""

    def __init__(self) -> None:
        super().__init__(tools=[get_exchange_rate])
        self.invoices = {"INV-1": {"amount": 1200.0, "status": "open"}}

    @tool(effect="read")
    def get_invoice(self, invoice_id: str) -> dict:
        """Look up an invoice.

        Args:
            invoice_id: Invoice id, e.g. INV-1.
        """
        if invoice_id not in self.invoices:
            raise ToolError(f"no invoice {invoice_id}")
        return {"invoice_id": invoice_id, **self.invoices[invoice_id]}

    @tool(effect="write")
    def pay_invoice(self, invoice_id: str, amount: float) -> dict:
        """Pay an open invoice in full.

        Args:
            invoice_id: Invoice id.
            amount: Amount paid; must equal the invoice amount.
        """
        invoice = self.invoices[invoice_id]
        if amount != invoice["amount"]:
            raise ToolError(f"amount {amount} does not match the invoice amount {invoice['amount']}")
        invoice["status"] = "paid"
        return {"invoice_id": invoice_id, "status": "paid"}


desk = Payables()
for schema in desk.schemas():
    print(schema["effect"], schema["function"]["name"], list(schema["function"]["parameters"]["properties"]))

# What a model's tool calls get back: results, or errors it can read and correct.
for name, arguments in [
    ("get_invoice", {"invoice_id": "INV-1"}),
    ("pay_invoice", {"invoice_id": "INV-1", "amount": "a lot"}),  # invalid arguments
    ("pay_invoice", {"invoice_id": "INV-1", "amount": 1000}),  # the tool refuses
    ("pay_invoice", {"invoice_id": "INV-1", "amount": 1200}),
    ("wire_money", {}),  # unknown tool
]:
    observation = desk.call(name, arguments)
    print(f"{name}({arguments}) -> ok={observation.ok} {observation.content}")
assert desk.invoices["INV-1"]["status"] == "paid"
