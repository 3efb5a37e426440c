import './base.css';
import './runview.css';
import './commitview.css';
import './compareview.css';
