"""proxy.memory.MemoryReturn: when the proxy collects and trims after clients leave."""

from proxy.memory import MemoryReturn


def test_trims_once_after_a_large_drop_from_the_peak():
    m = MemoryReturn(min_drop=500, fraction=0.5)
    assert not any(m.tick(n) for n in (0, 100, 5000, 10000))   # growing: nothing to give back
    assert not m.tick(9000)          # 1,000 ended, but not half of the peak
    assert not m.tick(2000)          # 8,000 of 10,000 ended, but still falling: wait
    assert m.tick(2000)              # stopped falling: collect and trim
    assert m.trims == 1 and m.peak == 2000
    assert not m.tick(1800)          # the peak restarted from 2,000: 200 ended
    assert not m.tick(1200)          # 800 ended: more than min_drop, less than half of 2,000
    assert not m.tick(900)           # 1,100 ended, more than half, still falling
    assert m.tick(950)               # a few new clients came: the crowd has left
    assert m.trims == 2


def test_a_crowd_leaving_over_several_ticks_is_trimmed_once_at_the_end():
    m = MemoryReturn(min_drop=500, fraction=0.5)
    m.tick(1500)
    assert not any(m.tick(n) for n in (1400, 700, 100, 0))   # still leaving
    assert m.tick(0)
    assert m.trims == 1 and not m.tick(0)

def test_small_servers_never_trim_for_a_few_clients():
    m = MemoryReturn(min_drop=500, fraction=0.5)
    for n in (0, 300, 0, 300, 0):
        assert not m.tick(n)
    assert m.trims == 0
