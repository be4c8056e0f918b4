from evocode.cli import main

raise SystemExit(main())
