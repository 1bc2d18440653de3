from pipelines import Gatehouse


def test_small_refund_runs_to_completion_without_approval(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger(
        "refund_request",
        {"order_id": "ord_1001", "amount": "12.50", "reason": "broken"},
        user="carol",
    )
    assert run.status == "succeeded"
    assert run.output["status"] == "refunded"
