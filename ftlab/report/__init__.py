"""Reports: the campaign table (`table`), a failing run as a per-thread timeline (`timeline`),
the invariants in words (`invariants`), matplotlib plots (`plots`) and the HTML page (`html`)."""
