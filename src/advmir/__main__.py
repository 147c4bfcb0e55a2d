from advmir.cli import main

raise SystemExit(main())
