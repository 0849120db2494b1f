from loopline.cli.main import main

raise SystemExit(main())
