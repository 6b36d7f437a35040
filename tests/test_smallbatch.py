"""The small-batch linear form used by greedy decoding (grin_ui.smallbatch)."""

import torch

from grin_ui import smallbatch
from grin_ui.smallbatch import SmallBatchLinear, small_batch_linears


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(24, 40)
        self.b = torch.nn.Linear(40, 8, bias=False)
        self.other = Sub(8, 8)  # a subclass (as a quantized layer is): left alone

    def forward(self, x):
        return self.other(self.b(torch.relu(self.a(x))))


class Sub(torch.nn.Linear):
    pass


def test_same_product_at_few_rows_plain_above_and_restored(monkeypatch):
    calls = []
    net = Net()
    monkeypatch.setattr(smallbatch.torch, "mm", lambda *a: calls.append(1) or torch.matmul(*a))
    few, many = torch.randn(2, 3, 24), torch.randn(3, smallbatch.MAX_ROWS, 24)  # 6 rows; 48 rows
    with torch.no_grad():
        want_few, want_many = net(few), net(many)
    with torch.no_grad(), small_batch_linears(net) as same:
        assert same is net and type(net.a) is SmallBatchLinear and type(net.other) is Sub
        got_few = net(few)
        assert len(calls) == 2  # both plain layers took the small-batch form, the subclass did not
        got_many = net(many)
        assert len(calls) == 2  # above MAX_ROWS: F.linear, bit for bit
    assert torch.equal(got_many, want_many)
    torch.testing.assert_close(got_few, want_few, rtol=1e-5, atol=1e-6)
    assert got_few.shape == want_few.shape == (2, 3, 8)
    assert type(net.a) is torch.nn.Linear and type(net.b) is torch.nn.Linear  # restored after the block


def test_gradients_take_the_plain_form(monkeypatch):
    x = torch.randn(1, 24)
    plain = Net()
    plain(x).sum().backward()
    net = Net()
    monkeypatch.setattr(smallbatch.torch, "mm", lambda *a: (_ for _ in ()).throw(AssertionError("used")))
    with small_batch_linears(net):
        net(x).sum().backward()
    for p, q in zip(plain.parameters(), net.parameters()):  # F.linear's gradients, bit for bit
        assert torch.equal(p.grad, q.grad)
