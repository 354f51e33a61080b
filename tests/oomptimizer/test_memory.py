import torch

from nemo_emmett.oomptimizer.memory import cpu_allocation_peak, measure_peak, resident_bytes, tensor_bytes

MB = 1_000_000


def test_cpu_peak_is_the_highest_simultaneous_allocation():
    def work():
        a = torch.empty(10 * MB, dtype=torch.uint8)
        del a  # freed: the next two are alive together but smaller
        b = torch.empty(4 * MB, dtype=torch.uint8)
        c = torch.empty(7 * MB, dtype=torch.uint8)
        return b, c

    assert cpu_allocation_peak(work) == 11 * MB


def test_cpu_peak_counts_a_linear_layer_step():
    layer = torch.nn.Linear(1000, 1000, bias=False)  # 4 MB of weights, alive before: not counted

    def step():
        x = torch.ones(256, 1000, requires_grad=False)  # 1.024 MB
        layer(x).sum().backward()  # output 1.024 MB, weight gradient 4 MB

    extra = cpu_allocation_peak(step)
    assert 5 * MB <= extra <= 7 * MB
    peak = measure_peak(step, device=torch.device("cpu"), resident=resident_bytes(layer))
    assert peak.resident == 8_000_000  # weights + the gradient the first step left
    assert peak.peak == peak.resident + peak.extra


def test_resident_bytes_counts_shared_storage_once_and_optimizer_state():
    w = torch.zeros(1000)
    assert tensor_bytes([w, w[:10], w.view(10, 100)]) == 4000
    model = torch.nn.Linear(10, 10)  # 110 floats
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 10)).sum().backward()
    opt.step()  # gradients (110) and two moments (220), plus Adam's step counters
    assert resident_bytes(model) == 2 * 440
    assert resident_bytes(model, opt) >= 4 * 440
