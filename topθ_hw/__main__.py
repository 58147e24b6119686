from topθ_hw.cli import main

raise SystemExit(main())
